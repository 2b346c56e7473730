#!/usr/bin/python3
"""Optimizer goldens for tests/unit/test_optim.c (torch.optim, PyTorch 1.13).

Dev-only (run with Debian's /usr/bin/python3 from the repo root):

    /usr/bin/python3 tools/reference/gen_optim_goldens.py

Writes tests/data/golden/optim.safetensors (F32, byte-identical run to run):
  params (N)        starting parameters, N = 1000
  grads (3, N)      the gradient of each of 3 consecutive steps
  mask (N)          1.0 where weight decay applies (about a third), else 0.0
  adamw (3, N)      params after steps 1..3 of torch.optim.AdamW,
                    betas (0.9, 0.999), eps 1e-8, weight_decay 0.05 on the
                    masked params only (two param groups), lr per step LR_ADAMW
  sgd (3, N)        same for torch.optim.SGD, momentum 0.9, weight_decay 1e-4
                    masked, dampening 0, no nesterov, lr per step LR_SGD
  plain (3, N)      torch.optim.SGD with momentum 0 and weight_decay 0, lr per
                    step LR_SGD (checked here to equal p - lr*g exactly)
  clip_in (N)       gradients for clip_grad_norm_ (norm about 31.6)
  clip_out (N)      after torch.nn.utils.clip_grad_norm_(max_norm=CLIP_MAX)
  clip_norm (1)     the total norm it returned
__metadata__ records every hyper-parameter as a string.
"""
import torch

import st_write

N = 1000
SEED = 1234
LR_ADAMW = [1e-3, 5e-4, 2e-4]
LR_SGD = [0.1, 0.05, 0.02]
CLIP_MAX = 1.0
OUT = "tests/data/golden/optim.safetensors"


def run(make_opt, p0, grads, mask, lrs):
    """Steps an optimizer over the masked (decay) and unmasked groups and
    returns the full parameter vector after each step, shape (steps, N)."""
    dec = p0[mask].clone().requires_grad_(True)
    nodec = p0[~mask].clone().requires_grad_(True)
    opt = make_opt(dec, nodec)
    out = []
    for g, lr in zip(grads, lrs):
        dec.grad = g[mask].clone()
        nodec.grad = g[~mask].clone()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        p = torch.empty_like(p0)
        p[mask] = dec.detach()
        p[~mask] = nodec.detach()
        out.append(p)
    return torch.stack(out)


def main():
    gen = torch.Generator().manual_seed(SEED)
    params = torch.randn(N, generator=gen)
    grads = torch.randn(3, N, generator=gen) * 0.1
    mask = torch.rand(N, generator=gen) < 0.33

    adamw = run(lambda d, n: torch.optim.AdamW(
        [{"params": [d], "weight_decay": 0.05}, {"params": [n], "weight_decay": 0.0}],
        lr=LR_ADAMW[0], betas=(0.9, 0.999), eps=1e-8), params, grads, mask, LR_ADAMW)
    sgd = run(lambda d, n: torch.optim.SGD(
        [{"params": [d], "weight_decay": 1e-4}, {"params": [n], "weight_decay": 0.0}],
        lr=LR_SGD[0], momentum=0.9), params, grads, mask, LR_SGD)
    plain = run(lambda d, n: torch.optim.SGD([d, n], lr=LR_SGD[0]),
                params, grads, mask, LR_SGD)

    # plain SGD is exactly p - lr*g, step after step, with one rounding: torch's
    # add_(g, alpha=-lr) is fused, so compare with the float64 expression
    # rounded to float32 (the float32 expression p - lr*g can be 1 ulp off)
    p = params.clone()
    for s in range(3):
        lr32 = torch.tensor(LR_SGD[s], dtype=torch.float32).double()
        p = (p.double() - lr32 * grads[s].double()).float()
        assert torch.equal(p, plain[s]), "plain SGD is not p - lr*g"

    clip_in = torch.randn(N, generator=gen)
    holder = torch.zeros(N, requires_grad=True)  # clip_grad_norm_ scales .grad
    holder.grad = clip_in.clone()
    clip_norm = torch.nn.utils.clip_grad_norm_([holder], CLIP_MAX)
    clip_out = holder.grad
    assert clip_norm > CLIP_MAX

    tensors = {
        "params": params, "grads": grads, "mask": mask.float(),
        "adamw": adamw, "sgd": sgd, "plain": plain,
        "clip_in": clip_in, "clip_out": clip_out, "clip_norm": clip_norm.reshape(1),
    }
    meta = {
        "torch": torch.__version__, "seed": str(SEED), "n": str(N),
        "adamw": "betas=(0.9,0.999) eps=1e-8 weight_decay=0.05 (masked) lr=" + repr(LR_ADAMW),
        "sgd": "momentum=0.9 weight_decay=1e-4 (masked) lr=" + repr(LR_SGD),
        "plain": "momentum=0 weight_decay=0 lr=" + repr(LR_SGD),
        "clip": "max_norm=" + repr(CLIP_MAX),
    }
    st_write.save(OUT, tensors, meta)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
