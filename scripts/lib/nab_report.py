#!/usr/bin/env python3
"""NAB report for scripts/bench-nab: all-files scores, the two count files, and the
leave-one-category-out (LOCO) mean, computed with the NAB folder's own nabscore.py.

Usage: nab_report.py NAB_DIR RESULTS_DIR [RESULTS_DIR ...]

With one results folder (the shipped defaults), LOCO chooses only the threshold: for each of
the categories that have windows, the threshold is swept on every other category
(artificialNoAnomaly included) and the held-out category is scored at it. With several
folders (one per candidate setting), each fold also chooses the folder, by the other
categories' swept standard score, so a tuned value goes through the same loop as the
threshold. All-files figures are printed for the first folder.
"""
import importlib.util
import os
import sys


def load_scorer(nab_dir):
    spec = importlib.util.spec_from_file_location("nabscore", os.path.join(nab_dir, "nabscore.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_records(nab, nab_dir, results_dir):
    """One scorer record per data file, as nabscore.py builds them."""
    import json

    with open(os.path.join(nab_dir, "labels", "combined_windows.json")) as f:
        windows = json.load(f)
    records, cache, offset = [], {}, 0
    for relpath in sorted(windows):
        path = nab.find_results_file(results_dir, relpath, cache)
        if path is None:
            raise SystemExit("no results for %s in %s" % (relpath, results_dir))
        data_ts = nab.read_data_timestamps(os.path.join(nab_dir, "data", relpath))
        _, scores = nab.read_results(path)
        if len(scores) != len(data_ts):
            raise SystemExit("%s: %d result rows, %d data rows" % (path, len(scores), len(data_ts)))
        record = nab.prepare_file(relpath, data_ts, scores, windows[relpath], 0.15, offset,
                                  lambda message: None)
        offset += record.n_windows
        records.append(record)
    return records


def weights(nab_dir, profile):
    import json

    with open(os.path.join(nab_dir, "config", "profiles.json")) as f:
        matrix = json.load(f)[profile]["CostMatrix"]
    return float(matrix["tpWeight"]), float(matrix["fpWeight"]), float(matrix["fnWeight"])


def score_at(nab, records, threshold, w):
    """Normalised score, windows found and false-positive rows of `records` at `threshold`."""
    rows = [nab.score_file(r, threshold, *w) for r in records]
    raw = sum(x["raw"] for x in rows)
    null, perfect = nab.null_and_perfect(records, *w)
    found = sum(x["windows_detected"] for x in rows)
    total = sum(x["windows"] for x in rows)
    fp = sum(x["fp"] for x in rows)
    return nab.normalise(raw, null, perfect), found, total, fp


def swept(nab, records, w):
    threshold, _ = nab.sweep(records, *w)
    return threshold, score_at(nab, records, threshold, w)


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    nab_dir, folders = argv[1], argv[2:]
    nab = load_scorer(nab_dir)
    runs = [load_records(nab, nab_dir, folder) for folder in folders]
    standard = weights(nab_dir, "standard")
    records = runs[0]

    print("all files (threshold swept per profile)")
    for profile in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
        w = weights(nab_dir, profile)
        threshold, (score, found, total, fp) = swept(nab, records, w)
        print("  %-20s %7.2f   threshold %.4f  windows %d/%d  fp rows %d"
              % (profile, score, threshold, found, total, fp))
    threshold, _ = swept(nab, records, standard)
    names = [n for n in ("realKnownCause/nyc_taxi.csv", "realAWSCloudwatch/elb_request_count_8c0756.csv")
             if any(r.relpath == n for r in records)]
    if names:
        print("count files (standard, at the all-files threshold %.4f)" % threshold)
    for name in names:
        record = [r for r in records if r.relpath == name]
        score, found, total, fp = score_at(nab, record, threshold, standard)
        print("  %-48s %7.2f   windows %d/%d  fp rows %d" % (name, score, found, total, fp))

    categories = sorted({r.category for r in records if r.n_windows > 0})
    if len(categories) < 2:
        return
    print("leave one category out (standard): choose on the others, score the held-out one")
    held_out_scores = []
    for category in categories:
        best = None
        for index, run in enumerate(runs):
            others = [r for r in run if r.category != category]
            threshold, (score, _, _, _) = swept(nab, others, standard)
            if best is None or score > best[0] + 1e-9:
                best = (score, index, threshold)
        train, index, threshold = best
        held = [r for r in runs[index] if r.category == category]
        score, found, total, fp = score_at(nab, held, threshold, standard)
        held_out_scores.append(score)
        chosen = "" if len(runs) == 1 else "  setting %d (%s)" % (index, os.path.basename(folders[index].rstrip("/")))
        print("  %-24s %7.2f   threshold %.4f  windows %d/%d  fp rows %d  (others %.2f)%s"
              % (category, score, threshold, found, total, fp, train, chosen))
    print("  %-24s %7.2f" % ("LOCO mean", sum(held_out_scores) / len(held_out_scores)))


if __name__ == "__main__":
    main(sys.argv)
