"""MergingUriel's built-in plugins, registered through the ``merginguriel`` entry-point group
like any third-party plugin (installed as the package ``merginguriel_plugins``)."""
