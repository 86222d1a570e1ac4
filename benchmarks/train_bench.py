"""Training throughput of the framework (Lightning) vs a plain PyTorch loop of the same model and work.

    python benchmarks/train_bench.py [--check] [--width 16] [--images 2560] [--epochs 2] [--repeats 2]

Both train a fresh ResNet-18 (CIFAR stem, the laptop preset's width) on the same 500 labelled
32x32 images, upsampled to ``--images`` samples per epoch, batch 128, with the same augmentation
(RandAugmentMC), normalisation, precision (bf16 autocast where the CPU has it), SGD + Nesterov,
warm-up + cosine schedule and a validation pass per epoch keeping the best state:

* ``classification.training.fit`` — the framework's trainer (Lightning);
* a plain loop written here with the same pieces — the speed the hardware gives this model.

Target: framework images/s >= 0.9x the plain loop's.  Times are process CPU seconds, best of
``--repeats`` interleaved runs (other work on a shared machine does not bend the ratio); 1 thread
unless ``--threads``.  Prints the load (``uptime``) before and after.  ``--check``: exit 1 on FAIL.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.study_bench import uptime  # noqa: E402



def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 when the target fails")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--images", type=int, default=2560, help="samples per epoch (upsampled labelled set)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)

    import numpy as np
    import torch
    import torch.nn.functional as F
    from core import threads
    threads.apply(a.threads)
    from classification.augment import augment_batch, normalise
    from classification.data import ImageData
    from classification.model import ResNet18
    from classification.training import (Batches, FitTask, TrainConfig, _precision, fit, labelled_loader,
                                         param_groups, score, warmup_cosine)
    print(f"load before: {uptime()}")
    g = torch.Generator().manual_seed(0)
    train = ImageData(torch.randint(0, 256, (500, 3, 32, 32), dtype=torch.uint8, generator=g),
                      np.arange(500) % 10)
    val = ImageData(torch.randint(0, 256, (250, 3, 32, 32), dtype=torch.uint8, generator=g), np.arange(250) % 10)
    mean, std = (128.0,) * 3, (64.0,) * 3
    cfg = TrainConfig(epochs=a.epochs, warmup_epochs=1, batch_size=128, min_train=a.images, width=a.width,
                      mc_samples=8)
    task = FitTask(train, val, 10, mean, std, seed=0, device="cpu")
    bf16 = _precision(cfg, "cpu") == "bf16-mixed"

    def framework():
        fit(task, cfg)

    def plain():
        torch.manual_seed(0)
        net = ResNet18(10, width=cfg.width)
        loader, _ = labelled_loader(train, cfg, 10, False)
        val_loader = Batches(val, cfg.eval_batch_size)
        opt = torch.optim.SGD(param_groups(net, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
        total, warm = cfg.epochs * len(loader), cfg.warmup_epochs * len(loader)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warm, total))
        best, state = -1.0, None
        for _ in range(cfg.epochs):
            net.train()
            for x, y in loader:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    logits = net(normalise(augment_batch(x, cfg.augmentation), mean, std))
                loss = F.cross_entropy(logits.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            net.eval()
            pred, true = [], []
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                for x, y in val_loader:
                    pred.append(net.predict_probs(net.features(normalise(x, mean, std)).float()).argmax(1))
                    true.append(y)
            v = score("accuracy", torch.cat(true).numpy(), torch.cat(pred).numpy(), 10)
            if v > best:
                best, state = v, copy.deepcopy(net.state_dict())
        net.load_state_dict(state)

    n_images = cfg.epochs * (a.images // cfg.batch_size) * cfg.batch_size
    best = {"framework": float("inf"), "plain": float("inf")}
    for _ in range(a.repeats):   # interleaved: the same conditions for both
        for name, fn in (("plain", plain), ("framework", framework)):
            t = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - t)
    ips = {k: n_images / v for k, v in best.items()}
    ratio = ips["framework"] / ips["plain"]
    ok = ratio >= 0.9
    print(f"ResNet-18 width {cfg.width}, batch {cfg.batch_size}, {n_images} training images per run "
          f"({cfg.epochs} epochs, validation each epoch), {'bf16 autocast' if bf16 else 'fp32'}, "
          f"{torch.get_num_threads()} thread(s); process CPU seconds, best of {a.repeats}")
    print(f"plain PyTorch loop: {best['plain']:.1f} s = {ips['plain']:.0f} img/s")
    print(f"framework (Lightning fit): {best['framework']:.1f} s = {ips['framework']:.0f} img/s")
    print(f"  framework / plain loop images/s = {ratio:.3f}x   (target >= 0.9x) {'PASS' if ok else 'FAIL'}")
    print(f"load after: {uptime()}")
    return 1 if a.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
