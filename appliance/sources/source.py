"""`rigtel source`: the rig data source program, whichever the setting `data_source` names.

supervisord runs this one program; `data_source = simulator` (the default) runs
`rigtel simulate`, `data_source = wits0` runs `rigtel wits0` against the rig's recorder.
Changing the source is then a settings edit and `supervisorctl restart source`, with no
change to the supervisord configuration.
"""

from __future__ import annotations

import importlib
from typing import Sequence

PROGRAMS = {"simulator": "appliance.sources.simulator", "wits0": "appliance.sources.wits0_ingest"}


def main(argv: Sequence[str]) -> int:
    from appliance.cli import load_settings, settings_parser

    parser = settings_parser("source", "Run the rig data source named by the setting data_source "
                                       "(simulator or wits0), with these same options.")
    args, _ = parser.parse_known_args(argv)
    cfg = load_settings(args)
    return importlib.import_module(PROGRAMS[cfg.data_source]).main(list(argv))
