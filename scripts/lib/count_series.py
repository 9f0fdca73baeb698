#!/usr/bin/env python3
"""Generate labelled count series for detector tuning, laid out like NAB (data/, labels/,
config/) so that nabscore.py scores them: scripts/bench-nab's count check, beside NAB's 48.

Usage: count_series.py OUT_DIR [FILES] [SEED]

Each file is a 5-minute event count with what real event counts have (a daily cycle, quieter
weekends, a drifting level, over-dispersed noise and routine bursts nobody labels) and 1 to 3
labelled anomalies after the probationary period, drawn from: a burst (6-30x the usual rate at
its start, decaying over 15 minutes to 3 hours), a sustained rise (2.5-5x for 2-12 hours), a
level shift (x2.5-4 from then on) and an outage of the counting itself (near zero for 1-6
hours). Windows follow NAB's rule: 10 % of the file's length shared among its anomalies,
centred on each start. Standard library only; the same seed gives the same files.
"""
import json
import math
import os
import random
import shutil
import sys
from datetime import datetime, timedelta

STEP = timedelta(minutes=5)
KINDS = ("burst", "burst", "burst", "rise", "shift", "outage")


def poisson(rng, mean):
    if mean > 500:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        p *= rng.random()
        k += 1
    return k


def negative_binomial(rng, mean, dispersion):
    if mean <= 0:
        return 0
    shape = 1.0 / dispersion
    return poisson(rng, rng.gammavariate(shape, mean / shape))


def anomaly(draw, kind):
    """The shape of one labelled anomaly: (kind, size, length in steps)."""
    if kind == "burst":
        return kind, draw.uniform(6, 30), draw.uniform(3, 36)
    if kind == "rise":
        return kind, draw.uniform(2.5, 5), draw.randint(24, 144)
    if kind == "shift":
        return kind, draw.uniform(2.5, 4), 0
    return kind, 0.02, draw.randint(12, 72)


def series(rng):
    rows = rng.randint(4032, 12096)
    start = datetime(2015, 2, 2) + timedelta(days=rng.randint(0, 300))
    level = math.exp(rng.uniform(math.log(4), math.log(400)))
    amplitude = rng.uniform(0.2, 0.8)
    peak_hour = rng.uniform(0, 24)
    weekend = rng.uniform(0.5, 1.0)
    dispersion = rng.uniform(0.02, 0.3)
    bursts_per_day = rng.uniform(0.3, 3.0)
    probation = min(int(rows * 0.15), 750)
    count = rng.choice((1, 1, 2, 2, 3))
    # Anomalies well apart, after the probationary period and a day of history.
    slots = sorted(rng.sample(range(probation + 288, rows - 36, 144), count))
    anomalies = [(at,) + anomaly(rng, rng.choice(KINDS)) for at in slots]
    values, drift, routine = [], 0.0, []
    for i in range(rows):
        t = start + i * STEP
        hour = t.hour + t.minute / 60.0
        rate = level * math.exp(drift) * (1 + amplitude * math.cos(2 * math.pi * (hour - peak_hour) / 24))
        if t.weekday() >= 5:
            rate *= weekend
        drift += rng.gauss(0, 0.004)
        if rng.random() < bursts_per_day / 288:
            routine.append((i, rng.uniform(1.5, 4.0), rng.uniform(1, 6)))
        routine = [r for r in routine if i - r[0] < 60]
        factor = 1.0 + sum((size - 1) * math.exp(-(i - b) / decay) for (b, size, decay) in routine)
        for (at, kind, size, length) in anomalies:
            age = i - at
            if age < 0:
                continue
            if kind == "burst":
                factor += (size - 1) * math.exp(-age / length)
            elif kind == "rise" and age < length:
                factor += size - 1
            elif kind == "shift":
                factor *= size
            elif kind == "outage" and age < length:
                factor *= size
        values.append(negative_binomial(rng, rate * factor, dispersion))
    return start, values, anomalies


def main(argv):
    out = argv[1]
    files = int(argv[2]) if len(argv) > 2 else 24
    seed = int(argv[3]) if len(argv) > 3 else 1
    rng = random.Random(seed)
    here = os.path.dirname(os.path.abspath(__file__))
    nab = os.environ.get("NAB_DIR", os.path.join(here, "..", "..", "..", "shared", "nab"))
    for sub in ("data/countSeries", "labels", "config"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    shutil.copy(os.path.join(nab, "config", "profiles.json"), os.path.join(out, "config"))
    shutil.copy(os.path.join(nab, "nabscore.py"), out)
    windows = {}
    for index in range(files):
        start, values, anomalies = series(rng)
        name = "countSeries/counts_%02d.csv" % index
        with open(os.path.join(out, "data", name), "w") as f:
            f.write("timestamp,value\n")
            for i, v in enumerate(values):
                f.write("%s,%d\n" % ((start + i * STEP).strftime("%Y-%m-%d %H:%M:%S"), v))
        width = int(len(values) * 0.10 / len(anomalies))
        windows[name] = [
            [(start + (at - width // 2) * STEP).strftime("%Y-%m-%d %H:%M:%S.000000"),
             (start + (at + width // 2) * STEP).strftime("%Y-%m-%d %H:%M:%S.000000")]
            for (at, _, _, _) in anomalies]
    with open(os.path.join(out, "labels", "combined_windows.json"), "w") as f:
        json.dump(windows, f, indent=1)


if __name__ == "__main__":
    main(sys.argv)
