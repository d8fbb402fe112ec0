"""The predictor's parameters: rig-dependent thresholds, detector limits and alarm timing.

Every field has a default that suits a land or jack-up rig drilling 8½–12¼ in hole with
5 in pipe. Fields listed in SETTING_FIELDS are also settings (`predictor_<field>` in
appliance.config, so in appliance.ini, the environment and `--set`), because they differ
from rig to rig; `from_config(cfg)` reads them. The others are tuning constants a
backtest may change in code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

# channels whose readings mean nothing with the pumps off: their low alarms, anomalies
# and flatlines are suppressed while the pumps are off (consequential alarms)
PUMP_CHANNELS = frozenset({"SPPA", "MFIA", "MFOA", "MFOP", "SPM1", "SPM2", "SPM3"})


@dataclass(frozen=True)
class PredictorParams:
    # -- the rig and the hole
    bit_size_in: float = 8.5  # for MSE (bit area) and hole capacity
    block_weight_klbf: float = 45.0  # travelling block and top drive: hookload with the string in the slips
    slips_margin_klbf: float = 15.0  # hookload below block weight + this: the string is in the slips
    on_bottom_ft: float = 1.0  # bit within this of hole depth: on bottom
    pumps_on_gpm: float = 50.0  # flow in above this: pumps on
    pumps_on_spm: float = 5.0  # else total strokes above this
    pumps_on_psi: float = 150.0  # else standpipe pressure above this
    rotating_rpm: float = 5.0  # rotary speed above this: the string is turning
    moving_ft_s: float = 0.05  # bit speed above this: the bit is moving (0.05 ft/s = 180 ft/h)
    pump_output_gal_stroke: float = 4.2  # gallons per stroke, for flow in from strokes
    pipe_displacement_bbl_ft: float = 0.0075  # steel volume of the string per foot (pit follows trips)
    flowline_tau_s: float = 30.0  # time constant of the returns draining back when the pumps stop
    # -- kick and loss
    kick_flow_gpm: float = 5.0  # flow out above the expected flow by more than this accumulates (CUSUM k)
    kick_flow_gal: float = 2.0  # ... and an alarm needs this many accumulated gallons (CUSUM h)
    kick_pit_bbl: float = 5.0  # pit gain over the baseline that alone says kick
    loss_flow_gpm: float = 10.0
    loss_flow_gal: float = 5.0
    loss_pit_bbl: float = 8.0
    transfer_bbl_min: float = 4.0  # pit changing faster than this with no flow change: a mud transfer
    pit_baseline_tau_s: float = 1800.0  # the pit baseline relaxes towards the pit this slowly
    # -- washout and pack-off
    washout_drop_pct: float = 1.0  # standpipe pressure below the expected for the flow by more than this adds up (CUSUM k)
    washout_fast_drop_pct: float = 0.3  # ... below its own level of the last minutes by more than this (and 0.75 σ) adds up (fast CUSUM k; the ramp test's least fall)
    packoff_rise_pct: float = 1.0  # ... above it by more than this adds up towards "pressure up" (CUSUM k)
    pressure_alarm_pct_s: float = 30.0  # ... and either alarms at this many %·s added up (CUSUM h)
    packoff_torque_ratio: float = 3.0  # torque scatter above its norm by this factor: erratic
    overpull_klbf: float = 25.0  # pick-up hookload above the normal pick-up weight by this
    # -- drilling dysfunction
    stick_slip_cv: float = 0.15  # torque's coefficient of variation over 30 s while drilling
    mse_rop_pct: float = 25.0  # MSE up and ROP down by this much over the trend window
    # -- sensors
    flatline_s: float = 30.0  # a moving channel frozen this long: flatline
    dropout_s: float = 30.0  # a channel missing this long while others arrive: dropout
    dropout_forget_s: float = 21600.0  # after this long the channel is no longer expected
    spike_count: int = 3  # this many spikes on one channel ...
    spike_window_s: float = 300.0  # ... within this: a spiking sensor
    spike_gross_count: int = 2  # or this many gross spikes (far beyond the channel's scatter and 2 % of its range)
    # -- statistical anomalies (channel -> smallest change worth an alarm, in its unit)
    anomaly_z: float = 6.0
    anomaly_window_s: float = 600.0
    anomaly_warmup_s: float = 300.0
    anomaly_channels: dict[str, float] = field(default_factory=lambda: {
        "GASA": 15.0, "MDOA": 0.3, "CHKP": 150.0, "MTOA": 15.0})
    # -- alarm handling
    alarm_on_delay_s: float = 10.0  # default on-delay of detector alarms
    alarm_off_delay_s: float = 60.0  # and off-delay
    threshold_on_delay_s: float = 5.0
    threshold_off_delay_s: float = 10.0
    flood_alarms: int = 10  # alarms raised within flood_window_s that make a flood (EEMUA 191)
    flood_window_s: float = 600.0
    chatter_s: float = 120.0  # an alarm raised again this soon after clearing is chattering
    # -- models
    target_depth_ft: float = 0.0  # ETA_TD: hours to this hole depth at the recent rate (0: no target)
    derived_hz: float = 1.0  # how often the program publishes derived frames (also on state changes)

    def replace(self, **changes: Any) -> "PredictorParams":
        return replace(self, **changes)


# fields that are settings, because rigs differ; each is `predictor_<field>` in appliance.config
SETTING_FIELDS: tuple[str, ...] = (
    "bit_size_in", "block_weight_klbf", "slips_margin_klbf", "on_bottom_ft", "pumps_on_gpm",
    "pumps_on_spm", "pumps_on_psi", "rotating_rpm", "moving_ft_s", "pump_output_gal_stroke",
    "pipe_displacement_bbl_ft", "flowline_tau_s", "kick_flow_gpm", "kick_pit_bbl", "loss_flow_gpm",
    "loss_pit_bbl", "washout_drop_pct", "washout_fast_drop_pct", "overpull_klbf", "flatline_s", "dropout_s",
    "alarm_on_delay_s", "alarm_off_delay_s", "flood_alarms", "derived_hz", "target_depth_ft",
)


def from_config(cfg: Any) -> PredictorParams:
    """Parameters from the settings (`predictor_<field>`), defaults for the rest."""
    names = {f.name for f in fields(PredictorParams)}
    return PredictorParams(**{n: getattr(cfg, f"predictor_{n}") for n in SETTING_FIELDS if n in names})
