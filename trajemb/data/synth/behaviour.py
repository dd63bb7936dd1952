"""How synthetic road users behave and how their tracks are observed: the generator's calibrated
parameters, in one frozen dataclass (``trajemb.data.synth.scenario.generate_scenario`` takes another for
experiments; ``trajemb synth`` always uses ``BEHAVIOUR``).

Where the values come from (docs/data.md, "Realism", has the measurements):

* **Car following**: IDM parameters around those for city traffic in Treiber and Kesting, "Traffic
  Flow Dynamics" (2013), chapter 11 (a 1.0 m/s^2, b 1.5 m/s^2, T 1.0 s, s0 2 m), spread per driver.
* **Speeds**: desired speeds log-normal around urban speed limits (25-35 mph streets: 11-16 m/s), then
  lowered by curves, signals and the traffic ahead; calibrated so that the speed distribution of moving
  vehicle windows matches the calibration part of the real AV2 fixtures (median about 6 m/s).
* **Curves and turns**: drivers choose curve speeds by a lateral acceleration they accept, a few m/s^2
  and lower at higher speeds (Reymond et al., "Role of lateral acceleration in curve driving",
  Human Factors 43, 2001); the range is calibrated on the fixtures' turns.
* **Lane changes** take 4-7 s (Toledo and Zohar, "Modeling duration of lane changes", TRR 1999, 2007:
  mean 4.6 s, range 1-13 s); the generator's blend lengths over the speeds give that range.
* **Lane keeping**: drivers wander about their lane centre; the standard deviation of lateral position
  (SDLP) of attentive drivers is about 0.2 m (Verster and Roth, "Standard operation procedures for
  conducting the on-the-road driving test, and measurement of the standard deviation of lateral
  position", Int. J. Gen. Med. 4, 2011); pedestrians sway about their path.
* **Pedestrians** walk at 1.2-1.5 m/s (Knoblauch et al., "Field studies of pedestrian walking speed",
  TRR 1996: 1.2-1.5 m/s for younger and older pedestrians); cyclists ride at 4-6 m/s in cities.
* **Tracking noise**: AV2's tracks are the output of a tracker and, in the sensor dataset, annotated
  cuboids: smooth, with millimetres of step-to-step jitter on moving objects and a slow error of a few
  centimetres; the recorded heading holds still while an object stands (the motion-forecasting
  fixture shows exactly that on its parked vehicles).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Version of the generator's behaviour, written into every ``trajemb synth`` output's marker; the
#: default data is generated again when it differs. 1: lane-following speed profiles (up to 0.1.x), 2:
#: car following, signals, lane keeping, tracking noise (issue 19).
GENERATOR_VERSION = 2
#: Generators ``trajemb synth --generator`` offers (1: ``trajemb.data.synth.v1``, frozen).
GENERATORS: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class TrackerNoise:
    """How a tracker's output departs from the true motion: a slow error (metres, and its correlation
    time) and white noise per step (metres), per object type group."""

    slow_m: float
    slow_correlation_s: float
    white_m: float
    heading_rad: float  # white noise on the recorded heading
    #: Tracks differ in how well they are seen: each track's white noise is ``white_m`` times a
    #: log-normal factor of this log standard deviation (0: every track alike).
    white_spread: float = 0.0


@dataclass(frozen=True)
class Range:
    low: float
    high: float


@dataclass(frozen=True)
class Behaviour:
    # -- vehicles --------------------------------------------------------------------------------
    #: Median desired speed (m/s) at junctions and on open curved roads; log-normal spread.
    desired_speed_junction_mps: float = 9.5
    desired_speed_road_mps: float = 12.0
    desired_speed_log_sd: float = 0.3
    desired_speed_mps: Range = Range(4.0, 22.0)
    accel_mps2: Range = Range(1.0, 2.0)
    decel_mps2: Range = Range(1.5, 2.5)
    headway_s: Range = Range(1.0, 2.0)
    min_gap_m: Range = Range(1.5, 3.0)
    lateral_accel_mps2: Range = Range(0.8, 1.5)
    #: Drivers do not hold a speed: the desired speed varies by this share (standard deviation) over
    #: ``speed_correlation_s``.
    speed_variation: float = 0.08
    speed_correlation_s: float = 3.0
    #: Lane keeping: sideways wander about the route (m, standard deviation) over ``lane_correlation_s``.
    lane_wander_m: float = 0.15
    lane_correlation_s: float = 2.5
    #: Relative frequency of each intended vehicle manoeuvre (renormalised over what a network offers).
    manoeuvre_weights: dict[str, float] = field(
        default_factory=lambda: {
            "straight": 0.18,
            "left": 0.18,
            "right": 0.22,
            "u_turn": 0.04,
            "lane_change_left": 0.19,
            "lane_change_right": 0.19,
        }
    )
    #: Junction control: signals, all-way stop signs, or none (priority road); shares.
    junction_control: dict[str, float] = field(
        default_factory=lambda: {"signal": 0.55, "stop": 0.25, "none": 0.2}
    )
    #: A signalised approach is red at the start with this probability (until a uniform time in
    #: ``red_until_s``), else green and turns red during the scenario with ``turns_red``.
    red_at_start: float = 0.3
    red_until_s: Range = Range(1.0, 20.0)
    turns_red: float = 0.3
    red_from_s: Range = Range(2.0, 10.0)
    #: Standing at a stop sign (s).
    stop_sign_wait_s: Range = Range(0.5, 2.5)
    #: Share of vehicles that start standing (pulling out, waiting), and how long they wait (s).
    start_standing: float = 0.08
    start_wait_s: Range = Range(0.0, 4.0)
    #: Vehicles on a junction approach start up to this share of the distance they would drive in a
    #: scenario (plus 10 m) before the stop line, so that most reach the junction while seen.
    approach_share: float = 0.5
    #: Share of vehicles still outside the map at time 0 (they drive in from the far end).
    entering: float = 0.15
    # -- vulnerable road users -----------------------------------------------------------------
    pedestrian_speed_mps: float = 1.2
    pedestrian_speed_sd_mps: float = 0.15
    pedestrian_speed_mps_range: Range = Range(0.7, 2.2)
    pedestrian_speed_variation: float = 0.08
    pedestrian_speed_correlation_s: float = 2.0
    pedestrian_wander_m: float = 0.3
    pedestrian_correlation_s: float = 2.0
    cyclist_speed_mps: float = 4.5
    cyclist_speed_sd_mps: float = 1.0
    cyclist_speed_mps_range: Range = Range(2.5, 8.0)
    cyclist_wander_m: float = 0.2
    # -- the tracker ---------------------------------------------------------------------------
    vehicle_noise: TrackerNoise = TrackerNoise(0.06, 0.6, 0.001, 0.005, 0.8)
    vru_noise: TrackerNoise = TrackerNoise(0.02, 2.0, 0.0003, 0.01, 0.5)
    standing_noise: TrackerNoise = TrackerNoise(0.02, 2.0, 0.001, 0.002)
    #: Share of tracks that lose a stretch of steps (occlusion), and how many steps.
    occluded: float = 0.12
    occlusion_steps: Range = Range(3, 16)


BEHAVIOUR = Behaviour()
