#!/usr/bin/env python3
"""Low-rank MiniLM (-25 % encoder params) recovered with embedding KD on sts-train sentences.

Usage: .venv/bin/python benchmarks/kd_minilm.py [--epochs 1] [--batch 32] [--lr 1e-4]
       [--max-sentences N] [--out DIR]

1. `edgecompress.passes.lowrank` (SVD of the encoder's Linear layers) with a parameter budget
   chosen so the *encoder* (transformer layers, not the word-embedding table) loses 25 %.
2. KD: the student's sentence embedding is pulled toward the fp32 teacher's (the original
   encoder): loss = MSE(emb_s, emb_t) * dim (unit vectors, so this is 2 - 2 cos per sentence),
   on the unique sentences of sts-train.csv (no gold scores are used). The passes' own
   `finetune` loop takes single-tensor inputs and a logit KL loss, hence this small loop.
3. Spearman x100 on sts-dev before and after KD, next to the fp32 teacher.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def encoder_params(module) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if ".encoder.layer." in f".{n}")


def spearman_dev(module, dev) -> float:
    from edgecompress.targets import reference_outputs
    from edgecompress.targets.metrics import task_metrics

    return 100 * task_metrics(reference_outputs(module, dev, batch=64, progress=False), dev)["spearman"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-sentences", type=int, default=0)
    ap.add_argument("--cut", type=float, default=0.25, help="fraction of encoder params to remove")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/edgecompress-kd-minilm")
    a = ap.parse_args()

    import numpy as np
    import torch

    from edgecompress.data.text import get_tokenizer, load_text_for, read_sts, tokenize
    from edgecompress.models import load_model
    from edgecompress.passes.lowrank import lowrank
    from edgecompress.paths import shared_data_dir

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    sts = shared_data_dir() / "stsbenchmark"
    t0 = time.time()
    teacher = load_model("zoo:minilm-l6")
    dev = load_text_for(teacher, str(sts / "sts-dev.csv"), "evaluation", length="longest")
    total = sum(p.numel() for p in teacher.module.parameters())
    enc = encoder_params(teacher.module)
    budget = (total - a.cut * enc) / total
    log: dict = {"params_total": total, "encoder_params": enc, "param_budget": budget}
    log["teacher_spearman"] = spearman_dev(teacher.module, dev)
    print(f"teacher: {total:,} params ({enc:,} in the encoder layers), "
          f"Spearman {log['teacher_spearman']:.2f}", file=sys.stderr)

    student = lowrank(teacher, {"param_budget": budget, "ignored": ["encoder.pooler.dense"]},
                      progress=False)
    s_enc = encoder_params(student.module)
    log["student_encoder_params"] = s_enc
    log["encoder_cut"] = 1 - s_enc / enc
    log["student_params_total"] = sum(p.numel() for p in student.module.parameters())
    log["lowrank"] = student.extra["passes"][-1]["log"].get("energy_found")
    log["student_spearman_before_kd"] = spearman_dev(student.module, dev)
    print(f"low-rank: encoder params {s_enc:,} (-{100 * log['encoder_cut']:.1f} %), Spearman "
          f"before KD {log['student_spearman_before_kd']:.2f}", file=sys.stderr)

    a_s, b_s, _ = read_sts(sts / "sts-train.csv")
    sentences = list(dict.fromkeys(a_s + b_s))
    if a.max_sentences:
        sentences = sentences[:a.max_sentences]
    tok = get_tokenizer(teacher.extra["tokenizer"])
    rng = np.random.default_rng(0)
    t_mod = teacher.module.eval()
    s_mod = student.module
    opt = torch.optim.AdamW(s_mod.parameters(), lr=a.lr, weight_decay=0.01)
    steps = a.epochs * -(-len(sentences) // a.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=steps, pct_start=0.1)
    step, losses = 0, []
    for epoch in range(a.epochs):
        order = rng.permutation(len(sentences))
        s_mod.train()
        for i in range(0, len(order), a.batch):
            batch = [sentences[j] for j in order[i:i + a.batch]]
            x = {k: torch.from_numpy(v) for k, v in tokenize(batch, tok, 128, "longest").items()}
            with torch.no_grad():
                t_emb = t_mod(**x)
            s_emb = s_mod(**x)
            loss = torch.nn.functional.mse_loss(s_emb, t_emb) * s_emb.shape[1]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            if step % 50 == 0:
                print(f"epoch {epoch + 1} step {step}/{steps} loss {np.mean(losses[-50:]):.4f} "
                      f"({time.time() - t0:.0f} s)", file=sys.stderr)
    s_mod.eval()
    log["kd"] = {"sentences": len(sentences), "epochs": a.epochs, "batch": a.batch, "lr": a.lr,
                 "steps": step, "last_loss": float(np.mean(losses[-50:])) if losses else None}
    log["student_spearman_after_kd"] = spearman_dev(s_mod, dev)
    log["seconds"] = round(time.time() - t0)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(s_mod.state_dict(), out / "minilm-l6-lowrank-kd.pt")
    (out / "kd.json").write_text(json.dumps(log, indent=1, default=str))
    print(json.dumps(log, indent=1, default=str))
    _ = copy
    return 0


if __name__ == "__main__":
    sys.exit(main())
