"""Realistic, reproducible event traffic for the wire contract, with faults on demand.

Demos, load tests and the ingest tests need a stream that looks like production (sensor
readings that follow a daily cycle, users who browse in sessions) and that also carries,
in controlled shares, the messages the pipeline has to survive: malformed payloads,
producer resends and late arrivals. Everything is drawn from one ``random.Random(seed)``
and a simulated clock, so the same config gives the same bytes on every run and machine.

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
from collections.abc import Iterator
from dataclasses import dataclass

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

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS_PER_DAY = 86_400_000
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


@dataclass(frozen=True, slots=True)
class SimulatedMessage:
    """One Kafka message to produce, labelled with what the simulator meant it to be,
    so tests and benchmarks can check the pipeline's verdicts against the truth."""

    key: bytes
    value: bytes
    kind: str
    event_id: str | None
    malformed_kind: str | None


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


@dataclass(slots=True)
class _User:
    """Per-user session state, so consecutive actions form believable sessions."""

    user_id: str
    key: bytes
    session_id: str | None = None
    remaining: int = 0
    cart_cents: int = 0
    last_us: int = 0


def generate(config: SimulatorConfig, count: int) -> Iterator[SimulatedMessage]:
    """Yield ``count`` messages for ``config``; same inputs, same bytes.

    Message ``i`` happens at ``start + i / events_per_second`` (or ``i`` ms when the rate
    is 0). With ``start=None`` the clock starts at the wall-clock time of this call.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    start = config.start if config.start is not None else dt.datetime.now(dt.UTC)
    return _Simulator(config, start).run(count)


def _to_us(moment: dt.datetime) -> int:
    """Microseconds since the epoch: integer time keeps the clock exact and fast."""
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


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

    def _ts_now(self, clock_us: int) -> tuple[int, str]:
        """The clock as (ms, text); the second's text is cached because consecutive
        messages nearly always share it and strftime is the costly part."""
        ms = clock_us // 1000
        sec, milli = divmod(ms, 1000)
        if sec != self.ts_sec:
            self.ts_sec = sec
            self.ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return ms, f"{self.ts_prefix}.{milli:03d}Z"

    def _fresh(self, clock_us: int, ts_ms: int, ts: str) -> _Event:
        """A well-formed event from a device or user chosen by the traffic mix."""
        if self.rng.random() < self.sensor_share:
            return self._sensor(ts_ms, ts)
        return self._user_activity(clock_us, ts)

    def _original(self, clock_us: int, late: bool) -> SimulatedMessage:
        """A fresh event stamped now ("valid") or 1-30 minutes ago ("late")."""
        if late:
            ts_ms = (clock_us - int(self.rng.uniform(LATE_MIN_S, LATE_MAX_S) * 1e6)) // 1000
            ts = _format_ts(ts_ms)
        else:
            ts_ms, ts = self._ts_now(clock_us)
        event = self._fresh(clock_us, ts_ms, ts)
        kind = "late" if late else "valid"
        return SimulatedMessage(event[0], (event[2][1] % event[3]).encode(), kind, event[1], None)

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
        return SimulatedMessage(original.key, original.value, "duplicate", original.event_id, None)

    def _sensor(self, ts_ms: int, ts: str) -> _Event:
        """A reading on the device's daily cycle (peak at 15:00 UTC) plus noise;
        humidity falls as temperature rises; the battery only ever drains."""
        rng = self.rng
        device = self.devices[int(rng.random() * len(self.devices))]
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
        values = (
            '"sensor_reading"',
            f'"{event_id}"',
            f'"{device.device_id}"',
            f'"{ts}"',
            f"{temp:.1f}",
            f"{min(100.0, max(0.0, humidity)):.1f}",
            f"{battery:.1f}",
            lat,
            lon,
            f'"{self._status(battery)}"',
        )
        return device.key, event_id, _SENSOR_SHAPE, values

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
        user = self.users[bisect.bisect_right(self.user_cum, rng.random() * self.user_cum[-1])]
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
