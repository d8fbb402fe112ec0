"""`rigtel config`: the effective settings, where each came from, secrets masked."""

from __future__ import annotations

from typing import Sequence

from appliance.cli import load_settings, settings_parser
from appliance.config import DEFAULT_CONFIG_FILE


def main(argv: Sequence[str]) -> int:
    parser = settings_parser("config", "Print every setting's effective value and its source "
                                       "(default, file, env file, environment, command line).")
    args = parser.parse_args(argv)
    cfg = load_settings(args)
    if cfg.files:
        print(f"# read: {', '.join(cfg.files)}")
    else:
        print(f"# no settings file ({DEFAULT_CONFIG_FILE} does not exist; name one with --config FILE "
              f"or RIGTEL_CONFIG) and no .env file: defaults and environment only")
    rows = cfg.describe()
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        print(f"{name:<{width}} = {value}    # {source}")
    return 0
