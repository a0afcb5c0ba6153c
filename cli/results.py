"""Where the CLI's result-file helpers went: they live in the core now.

:func:`check_results_folder` and the atomic writers are in :mod:`merginguriel_core.outputs`,
the tables and reports in :mod:`merginguriel_core.reports`. This module only re-exports
the names the commands imported from here.
"""

from __future__ import annotations

from merginguriel_core.outputs import check_results_folder, write_json_atomically, write_text_atomically

__all__ = ["check_results_folder", "write_json_atomically", "write_text_atomically"]
