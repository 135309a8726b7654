"""100 -> 32 -> 100 on a 3.5 s trial: how the weight-update chunk changes learning (docs/learning.md).

    python scripts/long_trials.py --target word:BRAIN --chunk 500 --trials 100 --out runs/lt

The input is frozen 10 Hz Poisson noise (--input-seed); the target is a word written into spike
times (``word:TEXT``, :func:`spikeloop.sim.stimuli.text_raster`) or independent Poisson trains
(``poisson:RATE_HZ``, seed 2). Prints one JSON line: the cost over the first (silent) trial,
mean and sd over the network seeds, at trials 20, 50, 100, 200, 300, and the first trial at or
below half of it per seed.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from spikeloop.host.tasks import raster_task
from spikeloop.host.train import train
from spikeloop.params import Params
from spikeloop.sim.raster import from_dense, write_ras
from spikeloop.sim.stimuli import frozen_poisson, text_raster

T, N = 3500, 100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="word:SPIKE", help="word:TEXT or poisson:RATE_HZ")
    ap.add_argument("--input-seed", type=int, default=1)
    ap.add_argument("--chunk", default="default", help="steps per update, or 'default'")
    ap.add_argument("--r0-mv", type=float, default=0.1)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--backend", default="float", choices=("float", "model"))
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    kind, _, arg = a.target.partition(":")
    target = text_raster(arg, N, T) if kind == "word" else frozen_poisson(N, T, float(arg), 1e-3, 2)
    a.out.mkdir(parents=True, exist_ok=True)
    write_ras(a.out / "in.ras", *from_dense(frozen_poisson(N, T, 10.0, 1e-3, a.input_seed), 1e-3),
              n_neurons=N, duration_s=T / 1000)
    write_ras(a.out / "tgt.ras", *from_dense(target, 1e-3), n_neurons=N, duration_s=T / 1000)
    changes = {} if a.chunk == "default" else {"chunk_steps": int(a.chunk)}
    p, task = raster_task(a.out / "in.ras", a.out / "tgt.ras", Params(r0_mv=a.r0_mv),
                          n_hidden=a.hidden, **changes)
    m = train(p, task["inputs"], task["targets"], seeds=list(range(a.seeds)), trials=a.trials,
              backend=a.backend, out_dir=a.out / "run", plots=False)
    rc = np.array([[np.nan if v is None else v for v in row] for row in m["per_trial"]["rel_cost"]])
    res = dict(target=a.target, input_seed=a.input_seed, chunk=p.chunk_steps, r0_mv=a.r0_mv,
               hidden=a.hidden, backend=a.backend,
               **{f"rel@{k}": [round(float(np.mean(rc[k - 1])), 3), round(float(np.std(rc[k - 1])), 3)]
                  for k in (20, 50, 100, 200, 300) if k <= a.trials},
               first_below_half=[int(np.argmax(c <= 0.5)) if (c <= 0.5).any() else None for c in rc.T])
    print(json.dumps(res))


if __name__ == "__main__":
    main()
