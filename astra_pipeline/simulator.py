"""Realistic, reproducible event traffic for the wire contract, with faults on demand.

Demos, load tests and the ingest tests need a stream that looks like production (sensor
readings that follow a daily cycle, users who browse in sessions) and that also carries,
in controlled shares, the messages the pipeline has to survive: malformed payloads,
producer resends and late arrivals. Everything is drawn from one ``random.Random(seed)``
and a simulated clock, so the same config gives the same bytes on every run and machine.

Two opt-in behaviours give the scoring layer something to be measured against:

- Declining users (``declining_fraction``): a share of users whose activity decays over
  simulated days until they stop, so churn is learnable. ``session_continuation`` keeps
  sessions together at the low event rates that multi-day spans need.
- Labelled anomalies (``anomaly_rate_per_device_day``): spikes, drifts, stuck sensors and
  silent devices injected into the sensor stream.

Which users decline and which readings were tampered with is the ground truth:
:class:`Simulation` records it (:class:`GroundTruth`) and every tampered message says so
in :attr:`SimulatedMessage.anomaly`. Both draw from their own seeded generators, and with
the options at their defaults (off) the traffic is byte for byte what it was without them.

No I/O and no Kafka/Dagster/DuckDB imports: callers (the CLI, bench scripts, tests)
decide where the bytes go. Payloads are built as JSON text directly instead of through
``json.dumps`` because generation speed matters for load tests; every value written is a
number or a string that needs no escaping, so the output is plain, compact JSON.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

SENSOR_SHARE = 0.4
"""Share of fresh events that are sensor readings; the rest are user activity."""

MESSAGE_KINDS = ("valid", "late", "duplicate", "malformed")
MALFORMED_KINDS = ("bad_json", "missing_field", "out_of_range", "wrong_type", "future_ts")

LATE_MIN_S, LATE_MAX_S = 60.0, 1800.0
"""A late event claims a time 1-30 minutes before the simulated clock."""

FUTURE_MIN_S, FUTURE_MAX_S = 600.0, 3600.0
"""A future_ts event is 10-60 minutes ahead: well past the contract's 5-minute skew."""

SESSION_GAP = dt.timedelta(minutes=30)
"""A user idle this long on the simulated clock starts a new session."""

GPS_JITTER_DEG = 1e-4
"""Readings of a fixed device wobble by about 10 m, like a real GPS fix."""

_GPS_FIXES = 16
"""Distinct jittered fixes kept per device: picking a preformatted one is far cheaper
than formatting two floats per reading, and looks the same downstream."""

_NOISE_SAMPLES = 4096
"""Standard-normal draws made once per run: indexing one is several times cheaper than
``random.gauss`` (pure Python), and 4096 values are plenty for sensor noise."""

DUPLICATE_WINDOW = 4096
"""Resends pick from this many most recent originals, like producer retries do; it also
keeps memory flat for long runs."""

ANOMALY_KINDS = ("spike", "drift", "stuck", "silent")
"""What can be injected into a device's readings:

- ``spike``: one reading's temperature off by 6-15 C (either sign);
- ``drift``: temperature pulled away at 3-8 C per hour for 30-120 minutes, then back;
- ``stuck``: temperature and humidity frozen at the last values sent, for 10-45 minutes;
- ``silent``: no readings at all, for 15-90 minutes.
"""

SPIKE_C = (6.0, 15.0)
DRIFT_C_PER_H = (3.0, 8.0)
DRIFT_MINUTES = (30.0, 120.0)
STUCK_MINUTES = (10.0, 45.0)
SILENT_MINUTES = (15.0, 90.0)

DECLINE_STEEPNESS = 3.0
"""A declining user's activity is multiplied by ``exp(-3 * elapsed / length)`` between the
start of the decline and the stop (down to about 5%), and is zero after the stop."""

_SILENT_REDRAWS = 64
"""Draws of another device when the drawn one is silent, before the silence gives way."""

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS_PER_DAY = 86_400_000
_US_PER_DAY = 86_400_000_000
_US_PER_MINUTE = 60_000_000
_US_PER_HOUR = 3_600_000_000
_OPEN_END = 1 << 62
"""End of a spike's window until the spike has hit a reading."""
_SESSION_GAP_US = SESSION_GAP // dt.timedelta(microseconds=1)
_V4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_V4_SET = (0x4000 << 64) | (0x8000 << 48)

SENSOR_FIELDS = (
    "event_type",
    "event_id",
    "device_id",
    "ts",
    "temperature_c",
    "humidity_pct",
    "battery_pct",
    "lat",
    "lon",
    "status",
)
USER_FIELDS = ("event_type", "event_id", "user_id", "session_id", "ts", "action")
PURCHASE_FIELDS = (*USER_FIELDS, "amount", "currency")
"""Wire order of the fields the simulator writes, one tuple per payload shape."""

_Shape = tuple[tuple[str, ...], str]
"""Field names plus a ``%``-template over them: one string operation per message."""


def _shape(names: tuple[str, ...]) -> _Shape:
    """Derive the template from the names so field order lives in one place."""
    return names, "{" + ",".join(f'"{name}":%s' for name in names) + "}"


_SENSOR_SHAPE = _shape(SENSOR_FIELDS)
_USER_SHAPE = _shape(USER_FIELDS)
_PURCHASE_SHAPE = _shape(PURCHASE_FIELDS)

_Event = tuple[bytes, str, _Shape, tuple[str, ...]]
"""A built event before encoding: (key, event_id, shape, JSON literals). Kept as
literals so a malformed variant can drop or replace a field without re-deriving it."""


@dataclass(frozen=True)
class SimulatorConfig:
    """What to simulate; frozen so a config can be shared and reused for a replay."""

    devices: int = 50
    users: int = 200
    seed: int = 0
    malformed_fraction: float = 0.0
    duplicate_fraction: float = 0.0
    late_fraction: float = 0.0
    start: dt.datetime | None = None
    events_per_second: float = 0.0
    declining_fraction: float = 0.0
    """Share of users (rounded down) whose activity decays until they stop."""
    decline_start_days: tuple[float, float] = (2.0, 30.0)
    """A declining user's decline starts this many simulated days after ``start`` (uniform)."""
    decline_length_days: tuple[float, float] = (3.0, 12.0)
    """From the start of the decline to the last possible activity, in days (uniform)."""
    session_continuation: float = 0.0
    """Chance that a user event continues a session that is still open instead of drawing a
    user by weight. At the low rates of multi-day spans (an event a minute) a user drawn by
    weight is rarely drawn again within the 30-minute session gap; this keeps sessions
    several events long, as real ones are."""
    anomaly_rate_per_device_day: float = 0.0
    """Expected injected anomalies per device per simulated day (Poisson arrivals, one at a
    time per device)."""
    anomaly_kinds: tuple[str, ...] = ANOMALY_KINDS

    def __post_init__(self) -> None:
        """Reject impossible configs up front rather than producing odd traffic later."""
        if self.devices < 0 or self.users < 0 or self.devices + self.users == 0:
            raise ValueError("need at least one device or user, and no negative counts")
        for name in ("malformed_fraction", "duplicate_fraction", "late_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.malformed_fraction + self.duplicate_fraction > 1.0:
            raise ValueError("malformed_fraction + duplicate_fraction must not exceed 1")
        if self.start is not None and self.start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")
        if not (math.isfinite(self.events_per_second) and self.events_per_second >= 0):
            raise ValueError("events_per_second must be a finite number >= 0")
        if not 0.0 <= self.declining_fraction < 1.0:
            raise ValueError("declining_fraction must be within [0, 1)")
        for name in ("decline_start_days", "decline_length_days"):
            low, high = getattr(self, name)
            if not (0.0 <= low <= high and math.isfinite(high)):
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high")
        if self.decline_length_days[0] <= 0.0:
            raise ValueError("decline_length_days must be positive")
        if not 0.0 <= self.session_continuation < 1.0:
            raise ValueError("session_continuation must be within [0, 1)")
        rate = self.anomaly_rate_per_device_day
        if not (math.isfinite(rate) and rate >= 0):
            raise ValueError("anomaly_rate_per_device_day must be a finite number >= 0")
        unknown = set(self.anomaly_kinds) - set(ANOMALY_KINDS)
        if unknown or not self.anomaly_kinds:
            raise ValueError(f"anomaly_kinds must be a non-empty subset of {ANOMALY_KINDS}")


@dataclass(frozen=True, slots=True)
class SimulatedMessage:
    """One Kafka message to produce, labelled with what the simulator meant it to be,
    so tests and benchmarks can check the pipeline's verdicts against the truth."""

    key: bytes
    value: bytes
    kind: str
    event_id: str | None
    malformed_kind: str | None
    anomaly: str | None = None
    """The injected anomaly kind that changed this reading's values, if any."""


@dataclass(frozen=True, slots=True)
class DecliningUser:
    """Ground truth for churn: this user's activity decays from ``decline_start`` and
    there is none at or after ``stop``."""

    user_id: str
    decline_start: dt.datetime
    stop: dt.datetime


@dataclass(frozen=True, slots=True)
class InjectedAnomaly:
    """Ground truth for one injected anomaly on one device.

    ``start``/``end`` bound the window (inclusive) on the simulated clock: for a spike
    both are the spiked reading's time; for the others the planned window, cut short
    where the run ended first. ``event_ids`` are the readings whose values were changed
    (none for ``silent``: a silent device sends nothing)."""

    device_id: str
    kind: str
    start: dt.datetime
    end: dt.datetime
    event_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """What the simulator did on purpose, to measure the scoring layer against."""

    declining_users: tuple[DecliningUser, ...]
    anomalies: tuple[InjectedAnomaly, ...]

    def anomalous_event_ids(self, kinds: Iterable[str] | None = None) -> frozenset[str]:
        """Event ids of the tampered readings, optionally of some kinds only."""
        wanted = set(ANOMALY_KINDS if kinds is None else kinds)
        return frozenset(
            event_id for a in self.anomalies if a.kind in wanted for event_id in a.event_ids
        )


@dataclass(slots=True)
class _Device:
    """Per-device constants and the draining battery: what makes a device's series
    look like one physical thing over time."""

    device_id: str
    key: bytes
    base_temp: float
    amplitude: float
    base_humidity: float
    battery: float
    drain: float
    fixes: tuple[tuple[str, str], ...]
    next_anomaly_us: int = 0
    anomaly: _Anomaly | None = None
    last_values: tuple[str, str] = ("", "")


@dataclass(slots=True)
class _Anomaly:
    """An anomaly in progress on one device."""

    kind: str
    start_us: int
    end_us: int
    size: float
    """Spike: offset in C. Drift: C per microsecond. Unused otherwise."""
    frozen: tuple[str, str] = ("", "")
    event_ids: list[str] = field(default_factory=list)
    first_us: int = -1
    last_us: int = -1


@dataclass(slots=True)
class _User:
    """Per-user session state, so consecutive actions form believable sessions."""

    user_id: str
    key: bytes
    session_id: str | None = None
    remaining: int = 0
    cart_cents: int = 0
    last_us: int = 0
    decline_start_us: int = -1
    stop_us: int = -1
    """Declining users only: when the decay starts and when activity ends (-1: never)."""
    listed: bool = False
    """Whether the user is in the open-session list that continuation draws from."""


def generate(config: SimulatorConfig, count: int) -> Iterator[SimulatedMessage]:
    """Yield ``count`` messages for ``config``; same inputs, same bytes.

    Message ``i`` happens at ``start + i / events_per_second`` (or ``i`` ms when the rate
    is 0). With ``start=None`` the clock starts at the wall-clock time of this call.
    A multi-day span is a low rate: 30 days of 100,000 events is
    ``events_per_second = 100_000 / (30 * 86_400)``.
    """
    return iter(Simulation(config, count))


class Simulation:
    """One run of the simulator that also keeps its ground truth.

    Iterate it (once) for the messages. :attr:`ground_truth` lists the declining users
    from the start and the injected anomalies as they happen; it is complete once the
    iteration has finished.
    """

    def __init__(self, config: SimulatorConfig, count: int) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        start = config.start if config.start is not None else dt.datetime.now(dt.UTC)
        self._simulator = _Simulator(config, start)
        self._count = count
        self._started = False

    def __iter__(self) -> Iterator[SimulatedMessage]:
        if self._started:
            raise RuntimeError("a Simulation can be iterated only once")
        self._started = True
        return self._simulator.run(self._count)

    @property
    def ground_truth(self) -> GroundTruth:
        return self._simulator.ground_truth()


def simulate(config: SimulatorConfig, count: int) -> tuple[list[SimulatedMessage], GroundTruth]:
    """All ``count`` messages and the complete ground truth, for tests and benchmarks."""
    simulation = Simulation(config, count)
    messages = list(simulation)
    return messages, simulation.ground_truth


def _to_us(moment: dt.datetime) -> int:
    """Microseconds since the epoch: integer time keeps the clock exact and fast."""
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def _from_us(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


def _format_ts(ms: int) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, e.g. ``2026-11-23T07:45:05.123Z``."""
    sec, milli = divmod(ms, 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(sec))}.{milli:03d}Z"


def _uuid4(rng: random.Random) -> str:
    """A version-4 UUID string from the seeded rng; same text as
    ``str(uuid.UUID(int=rng.getrandbits(128), version=4))`` at a fraction of the cost."""
    h = f"{(rng.getrandbits(128) & _V4_CLEAR) | _V4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _encode(event: _Event) -> bytes:
    """Compact JSON for a well-formed event (the hot path)."""
    return (event[2][1] % event[3]).encode()


def _encode_fields(fields: dict[str, str]) -> bytes:
    """Compact JSON from edited literals (the malformed path, where shapes vary)."""
    return ("{" + ",".join([f'"{k}":{v}' for k, v in fields.items()]) + "}").encode()


def _activity(user: _User, clock_us: int) -> float:
    """A declining user's activity level now, relative to their usual one."""
    if clock_us < user.decline_start_us:
        return 1.0
    if clock_us >= user.stop_us:
        return 0.0
    elapsed = (clock_us - user.decline_start_us) / (user.stop_us - user.decline_start_us)
    return math.exp(-DECLINE_STEEPNESS * elapsed)


def _make_devices(rng: random.Random, count: int) -> list[_Device]:
    """Devices spread over Europe (prices are in EUR too), each with its own climate."""
    devices = []
    for n in range(count):
        device_id = f"dev-{n:05d}"
        lat, lon = rng.uniform(36.0, 60.0), rng.uniform(-9.0, 28.0)
        devices.append(
            _Device(
                device_id=device_id,
                key=device_id.encode(),
                base_temp=rng.uniform(15.0, 25.0),
                amplitude=rng.uniform(2.0, 6.0),
                base_humidity=rng.uniform(40.0, 70.0),
                battery=rng.uniform(30.0, 100.0),
                drain=rng.uniform(0.002, 0.02),
                fixes=_gps_fixes(rng, lat, lon),
            )
        )
    return devices


def _gps_fixes(rng: random.Random, lat: float, lon: float) -> tuple[tuple[str, str], ...]:
    """Preformatted (lat, lon) literals around a device's true position."""
    return tuple(
        (
            f"{lat + rng.uniform(-GPS_JITTER_DEG, GPS_JITTER_DEG):.5f}",
            f"{lon + rng.uniform(-GPS_JITTER_DEG, GPS_JITTER_DEG):.5f}",
        )
        for _ in range(_GPS_FIXES)
    )


def _make_users(rng: random.Random, count: int) -> tuple[list[_User], list[float]]:
    """Users plus cumulative activity weights: a few users are far busier than most,
    as in real traffic, and which ones is shuffled by the seed."""
    users = [_User(user_id=f"user-{n:05d}", key=f"user-{n:05d}".encode()) for n in range(count)]
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(count)]
    rng.shuffle(weights)
    cumulative, total = [], 0.0
    for weight in weights:
        total += weight
        cumulative.append(total)
    return users, cumulative


class _Simulator:
    """Holds the rng, the device/user state and the recent originals for resends."""

    def __init__(self, config: SimulatorConfig, start: dt.datetime) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.start_us = _to_us(start)
        self.step_us = 1e6 / config.events_per_second if config.events_per_second else 1000.0
        self.devices = _make_devices(self.rng, config.devices)
        self.users, self.user_cum = _make_users(self.rng, config.users)
        self.noise = [self.rng.gauss(0.0, 1.0) for _ in range(_NOISE_SAMPLES)]
        both = bool(self.devices and self.users)
        self.sensor_share = SENSOR_SHARE if both else float(bool(self.devices))
        self.recent: list[SimulatedMessage] = []
        self.recent_next = 0
        self.ts_sec = -1
        self.ts_prefix = ""
        # The opt-in behaviours draw from their own generators so that turning them on
        # does not reshuffle the plan of the others, and off leaves the main stream as is.
        self.declining = self._plan_declines()
        self.continuation = config.session_continuation
        self.open_users: list[_User] = []
        self.inject = config.anomaly_rate_per_device_day > 0 and bool(self.devices)
        self.anomaly_rng = random.Random(f"{config.seed}:anomalies")
        self.finished: list[InjectedAnomaly] = []
        self.label: str | None = None
        if self.inject:
            for device in self.devices:
                device.next_anomaly_us = self.start_us + self._anomaly_gap()

    def ground_truth(self) -> GroundTruth:
        return GroundTruth(self.declining, tuple(self.finished))

    def _plan_declines(self) -> tuple[DecliningUser, ...]:
        """Choose the declining users and their schedules, before any traffic."""
        config = self.config
        count = int(config.declining_fraction * len(self.users))
        if count == 0:
            return ()
        rng = random.Random(f"{config.seed}:declines")
        planned = []
        for n in sorted(rng.sample(range(len(self.users)), count)):
            user = self.users[n]
            start_us = self.start_us + int(rng.uniform(*config.decline_start_days) * _US_PER_DAY)
            stop_us = start_us + int(rng.uniform(*config.decline_length_days) * _US_PER_DAY)
            user.decline_start_us, user.stop_us = start_us, stop_us
            planned.append(DecliningUser(user.user_id, _from_us(start_us), _from_us(stop_us)))
        return tuple(planned)

    def run(self, count: int) -> Iterator[SimulatedMessage]:
        """Decide each message's kind with the rng, then build it at its clock time."""
        rng = self.rng
        malformed = self.config.malformed_fraction
        resend = malformed + self.config.duplicate_fraction
        remember = self.config.duplicate_fraction > 0
        late = self.config.late_fraction
        for index in range(count):
            clock_us = self.start_us + int(index * self.step_us)
            draw = rng.random() if resend else 1.0
            if draw < malformed:
                yield self._malformed(clock_us)
                continue
            if draw < resend and self.recent:
                yield self._duplicate()
                continue
            message = self._original(clock_us, late > 0 and rng.random() < late)
            if remember:
                self._remember(message)
            yield message
        if count and self.inject:
            self._close_all(self.start_us + int((count - 1) * self.step_us))

    def _ts_now(self, clock_us: int) -> tuple[int, str]:
        """The clock as (ms, text); the second's text is cached because consecutive
        messages nearly always share it and strftime is the costly part."""
        ms = clock_us // 1000
        sec, milli = divmod(ms, 1000)
        if sec != self.ts_sec:
            self.ts_sec = sec
            self.ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return ms, f"{self.ts_prefix}.{milli:03d}Z"

    def _fresh(self, clock_us: int, ts_ms: int, ts: str, tamper: bool = False) -> _Event:
        """A well-formed event from a device or user chosen by the traffic mix; with
        ``tamper`` a reading may carry an injected anomaly (originals only: a reading that
        is then broken on purpose would never reach the clean tables)."""
        self.label = None
        if self.rng.random() < self.sensor_share:
            return self._sensor(clock_us, ts_ms, ts, tamper)
        return self._user_activity(clock_us, ts)

    def _original(self, clock_us: int, late: bool) -> SimulatedMessage:
        """A fresh event stamped now ("valid") or 1-30 minutes ago ("late")."""
        if late:
            ts_ms = (clock_us - int(self.rng.uniform(LATE_MIN_S, LATE_MAX_S) * 1e6)) // 1000
            ts = _format_ts(ts_ms)
        else:
            ts_ms, ts = self._ts_now(clock_us)
        event = self._fresh(clock_us, ts_ms, ts, tamper=True)
        kind = "late" if late else "valid"
        value = (event[2][1] % event[3]).encode()
        return SimulatedMessage(event[0], value, kind, event[1], None, self.label)

    def _remember(self, message: SimulatedMessage) -> None:
        """Keep the most recent originals in a ring so resends have something to copy."""
        if len(self.recent) < DUPLICATE_WINDOW:
            self.recent.append(message)
        else:
            self.recent[self.recent_next] = message
            self.recent_next = (self.recent_next + 1) % DUPLICATE_WINDOW

    def _duplicate(self) -> SimulatedMessage:
        """A producer resend: an earlier original, same key and bytes, byte for byte."""
        original = self.recent[int(self.rng.random() * len(self.recent))]
        return SimulatedMessage(
            original.key, original.value, "duplicate", original.event_id, None, original.anomaly
        )

    def _sensor(self, clock_us: int, ts_ms: int, ts: str, tamper: bool) -> _Event:
        """A reading on the device's daily cycle (peak at 15:00 UTC) plus noise;
        humidity falls as temperature rises; the battery only ever drains."""
        rng = self.rng
        device = self.devices[int(rng.random() * len(self.devices))]
        if self.inject:
            device = self._audible(device, clock_us)
        hour = (ts_ms % _MS_PER_DAY) / 3_600_000
        swing = device.amplitude * math.sin((hour - 9.0) * math.pi / 12.0)
        noise = self.noise
        temp_noise = 0.4 * noise[int(rng.random() * _NOISE_SAMPLES)]
        temp = min(85.0, max(-60.0, device.base_temp + swing + temp_noise))
        humidity_noise = 1.5 * noise[int(rng.random() * _NOISE_SAMPLES)]
        humidity = device.base_humidity - 2.5 * (temp - device.base_temp) + humidity_noise
        device.battery = battery = max(0.0, device.battery - device.drain)
        event_id = _uuid4(rng)
        lat, lon = device.fixes[int(rng.random() * _GPS_FIXES)]
        temp_text = f"{temp:.1f}"
        humidity_text = f"{min(100.0, max(0.0, humidity)):.1f}"
        if self.inject and tamper:
            temp_text, humidity_text = self._tamper(device, clock_us, event_id, temp, humidity_text)
        values = (
            '"sensor_reading"',
            f'"{event_id}"',
            f'"{device.device_id}"',
            f'"{ts}"',
            temp_text,
            humidity_text,
            f"{battery:.1f}",
            lat,
            lon,
            f'"{self._status(battery)}"',
        )
        return device.key, event_id, _SENSOR_SHAPE, values

    # --- injected anomalies (only with anomaly_rate_per_device_day > 0) -------------------

    def _anomaly_gap(self) -> int:
        """Time to a device's next anomaly: exponential, so arrivals are Poisson."""
        mean_us = _US_PER_DAY / self.config.anomaly_rate_per_device_day
        return 1 + int(self.anomaly_rng.expovariate(1.0) * mean_us)

    def _audible(self, device: _Device, clock_us: int) -> _Device:
        """The drawn device, or another one drawn instead while it is silent. If every
        draw lands on a silent device (nearly all are silent), the silence gives way and
        its window ends here, so the ground truth stays true."""
        for _ in range(_SILENT_REDRAWS):
            self._advance(device, clock_us)
            if device.anomaly is None or device.anomaly.kind != "silent":
                return device
            device = self.devices[int(self.rng.random() * len(self.devices))]
        self._advance(device, clock_us)
        if device.anomaly is not None and device.anomaly.kind == "silent":
            self._close(device, clock_us - 1)
        return device

    def _advance(self, device: _Device, clock_us: int) -> None:
        """Close the device's anomaly if its window has passed, open the next one if due;
        a device not drawn for a while may have had whole windows pass unseen."""
        while True:
            anomaly = device.anomaly
            if anomaly is not None:
                if clock_us <= anomaly.end_us:
                    return
                self._close(device, anomaly.end_us)
            elif clock_us >= device.next_anomaly_us:
                self._open(device)
            else:
                return

    def _open(self, device: _Device) -> None:
        rng = self.anomaly_rng
        kinds = self.config.anomaly_kinds
        kind = kinds[int(rng.random() * len(kinds))]
        start_us = device.next_anomaly_us
        sign = 1.0 if rng.random() < 0.5 else -1.0
        if kind == "spike":
            end_us, size = _OPEN_END, sign * rng.uniform(*SPIKE_C)
        elif kind == "drift":
            end_us = start_us + int(rng.uniform(*DRIFT_MINUTES) * _US_PER_MINUTE)
            size = sign * rng.uniform(*DRIFT_C_PER_H) / _US_PER_HOUR
        else:
            minutes = STUCK_MINUTES if kind == "stuck" else SILENT_MINUTES
            end_us, size = start_us + int(rng.uniform(*minutes) * _US_PER_MINUTE), 0.0
        device.anomaly = _Anomaly(kind, start_us, end_us, size)

    def _close(self, device: _Device, end_us: int) -> None:
        """Record the finished anomaly (if it changed anything) and plan the next."""
        anomaly = device.anomaly
        assert anomaly is not None
        device.anomaly = None
        if anomaly.kind == "spike":
            start_us = end_us = anomaly.first_us
        else:
            start_us = anomaly.start_us
        device.next_anomaly_us = max(end_us, start_us) + self._anomaly_gap()
        if anomaly.kind == "silent" or anomaly.event_ids:
            self.finished.append(
                InjectedAnomaly(
                    device.device_id,
                    anomaly.kind,
                    _from_us(start_us),
                    _from_us(end_us),
                    tuple(anomaly.event_ids),
                )
            )

    def _close_all(self, last_clock_us: int) -> None:
        """At the end of the run, windows still open end at the last message's time."""
        for device in self.devices:
            self._advance(device, last_clock_us)
            if device.anomaly is not None:
                self._close(device, min(device.anomaly.end_us, last_clock_us))

    def _tamper(
        self, device: _Device, clock_us: int, event_id: str, temp: float, humidity_text: str
    ) -> tuple[str, str]:
        """Apply the device's current anomaly to a reading's (temperature, humidity)
        literals; remember what was sent, which a stuck sensor repeats."""
        anomaly = device.anomaly
        temp_text = f"{temp:.1f}"
        if anomaly is not None and anomaly.kind != "silent":
            if anomaly.kind == "stuck":
                if not anomaly.event_ids:
                    sent_before = bool(device.last_values[0])
                    anomaly.frozen = (
                        device.last_values if sent_before else (temp_text, humidity_text)
                    )
                temp_text, humidity_text = anomaly.frozen
            else:
                offset = anomaly.size
                if anomaly.kind == "drift":
                    offset *= clock_us - anomaly.start_us
                temp_text = f"{min(85.0, max(-60.0, temp + offset)):.1f}"
            anomaly.event_ids.append(event_id)
            if anomaly.first_us < 0:
                anomaly.first_us = clock_us
            anomaly.last_us = clock_us
            self.label = anomaly.kind
            if anomaly.kind == "spike":
                self._close(device, clock_us)
        device.last_values = (temp_text, humidity_text)
        return temp_text, humidity_text

    def _status(self, battery: float) -> str:
        """Mostly ok, sometimes degraded, rarely fault; a flat battery degrades more."""
        draw = self.rng.random()
        if draw < 0.003:
            return "fault"
        if draw < (0.03 if battery >= 10.0 else 0.3):
            return "degraded"
        return "ok"

    def _user_activity(self, clock_us: int, ts: str) -> _Event:
        """The next action of a user, continuing or starting a session."""
        rng = self.rng
        user = self._pick_user(clock_us)
        action, amount = self._next_action(user, clock_us)
        event_id = _uuid4(rng)
        session_id = user.session_id
        if action == "logout" or user.remaining <= 0:
            user.session_id = None
        base = (
            '"user_activity"',
            f'"{event_id}"',
            f'"{user.user_id}"',
            f'"{session_id}"',
            f'"{ts}"',
            f'"{action}"',
        )
        if amount is None:
            return user.key, event_id, _USER_SHAPE, base
        return user.key, event_id, _PURCHASE_SHAPE, (*base, amount, '"EUR"')

    def _pick_user(self, clock_us: int) -> _User:
        """A user with an open session (``session_continuation``), else one drawn by
        weight; a declining user's draw is accepted with their current activity level."""
        rng = self.rng
        if self.continuation and self.open_users and rng.random() < self.continuation:
            index = int(rng.random() * len(self.open_users))
            user = self.open_users[index]
            open_now = user.session_id is not None and clock_us - user.last_us <= _SESSION_GAP_US
            if open_now and (user.stop_us < 0 or clock_us < user.stop_us):
                return user
            # Stale entry: drop it (swap with the last) and fall back to a weighted draw.
            self.open_users[index] = self.open_users[-1]
            self.open_users.pop()
            user.listed = False
        while True:
            user = self.users[bisect.bisect_right(self.user_cum, rng.random() * self.user_cum[-1])]
            if user.stop_us < 0 or rng.random() < _activity(user, clock_us):
                return user

    def _next_action(self, user: _User, clock_us: int) -> tuple[str, str | None]:
        """Session flow: start with login or page_view, browse, fill the cart, sometimes
        buy what is in it, maybe log out at the end. Returns (action, amount literal)."""
        rng = self.rng
        idle = clock_us - user.last_us > _SESSION_GAP_US
        user.last_us = clock_us
        if user.session_id is None or idle:
            user.session_id = f"s-{rng.getrandbits(32):08x}"
            user.remaining = rng.randint(3, 25) - 1
            user.cart_cents = 0
            if self.continuation and not user.listed:
                user.listed = True
                self.open_users.append(user)
            return ("login" if rng.random() < 0.35 else "page_view"), None
        user.remaining -= 1
        if user.remaining <= 0:
            return ("logout" if rng.random() < 0.5 else "page_view"), None
        draw = rng.random()
        if user.cart_cents and draw < 0.12:
            cents, user.cart_cents = user.cart_cents, 0
            return "purchase", f"{cents // 100}.{cents % 100:02d}"
        if draw < 0.35:
            user.cart_cents += rng.randint(1, 120) * 100 - 1
            return "add_to_cart", None
        return "page_view", None

    def _malformed(self, clock_us: int) -> SimulatedMessage:
        """A realistic event broken in one of the ways producers break them."""
        rng = self.rng
        ts_ms, ts = self._ts_now(clock_us)
        event = self._fresh(clock_us, ts_ms, ts)
        self.label = None
        how = MALFORMED_KINDS[int(rng.random() * len(MALFORMED_KINDS))]
        if how == "bad_json":
            return SimulatedMessage(
                event[0], self._bad_json(_encode(event)), "malformed", None, how
            )
        fields = dict(zip(event[2][0], event[3], strict=True))
        if how == "missing_field":
            self._drop_field(fields)
        elif how == "out_of_range":
            self._out_of_range(fields)
        elif how == "wrong_type":
            self._wrong_type(fields)
        else:
            ahead_us = int(rng.uniform(FUTURE_MIN_S, FUTURE_MAX_S) * 1e6)
            fields["ts"] = f'"{_format_ts((clock_us + ahead_us) // 1000)}"'
        return SimulatedMessage(event[0], _encode_fields(fields), "malformed", None, how)

    def _bad_json(self, raw: bytes) -> bytes:
        """A truncated object (a cut-off write) or bytes that are not UTF-8 (a legacy
        encoder); both must fail before any field is looked at."""
        if self.rng.random() < 0.5:
            return raw[: 1 + int(self.rng.random() * (len(raw) - 1))]
        return raw.replace(b'"event_id":"', b'"event_id":"\xff\xfe', 1)

    def _drop_field(self, fields: dict[str, str]) -> None:
        """Remove one field the contract requires."""
        required = [name for name in fields if name not in ("amount", "currency")]
        del fields[required[int(self.rng.random() * len(required))]]

    def _out_of_range(self, fields: dict[str, str]) -> None:
        """A value of the right type outside the contract's bounds."""
        if "temperature_c" in fields:
            choices = (
                ("temperature_c", "999.0"),
                ("temperature_c", "-120.5"),
                ("humidity_pct", "-5.0"),
                ("humidity_pct", "140.0"),
                ("battery_pct", "180.0"),
                ("lat", "95.00000"),
                ("lon", "-200.00000"),
            )
            name, literal = choices[int(self.rng.random() * len(choices))]
            fields[name] = literal
        else:
            fields["action"] = '"purchase"'
            fields["amount"] = f"-{self.rng.randint(1, 500)}.{self.rng.randint(0, 99):02d}"
            fields["currency"] = '"EUR"'

    def _wrong_type(self, fields: dict[str, str]) -> None:
        """A value of the wrong JSON type; strict validation must not coerce it."""
        choices: tuple[tuple[str, str], ...]
        if "temperature_c" in fields:
            choices = (
                ("temperature_c", f'"{fields["temperature_c"]}"'),
                ("humidity_pct", f'"{fields["humidity_pct"]}"'),
                ("battery_pct", "true"),
                ("status", "1"),
                ("device_id", "17"),
            )
        else:
            choices = (
                ("amount", '"lots"'),
                ("session_id", "42"),
                ("user_id", "null"),
                ("action", '["page_view"]'),
            )
        name, literal = choices[int(self.rng.random() * len(choices))]
        fields[name] = literal
