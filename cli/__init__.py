"""The ``mu`` command line (installed as the package ``merginguriel_cli``)."""
