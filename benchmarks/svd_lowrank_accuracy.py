"""Is a randomized low-rank SVD exact enough for TinyLoRA's and LoRA-XS's frozen factors?

Compares ``torch.svd_lowrank`` (q = r + 10, niter 2/4/8) against the full SVD on every fifth
targeted projection of the embedded SmolLM2-135M-Instruct: the worst relative error of the top-r
singular values and of the rank-r product U_r S_r V_rᵀ. Run alone:

    .venv/bin/python benchmarks/svd_lowrank_accuracy.py
"""
import torch, time
from pefthub.models import load_model
from pefthub.methods import PAPER_TARGET_MODULES, matching_linears
torch.manual_seed(0)
lm = load_model("smollm2-135m-instruct")
mods = matching_linears(lm.model, list(PAPER_TARGET_MODULES))[::5]
print(len(mods), flush=True)
exact = {}
tf = 0
for name, lin in mods:
    W = lin.weight.detach().float()
    t=time.perf_counter(); exact[name] = torch.linalg.svd(W, full_matrices=False); tf += time.perf_counter()-t
print(f"full svd {tf:.2f}s for {len(mods)}", flush=True)
for r in (1, 4, 16):
  for niter in (2, 4, 8):
    worst_s = worst_rec = 0; tl = 0
    for name, lin in mods:
        W = lin.weight.detach().float(); U,S,Vh = exact[name]
        t=time.perf_counter(); u,s,v = torch.svd_lowrank(W, q=min(r+10, min(W.shape)), niter=niter); tl += time.perf_counter()-t
        worst_s = max(worst_s, ((s[:r]-S[:r]).abs()/S[:r]).max().item())
        e = (U[:,:r]*S[:r]) @ Vh[:r]; a = (u[:,:r]*s[:r]) @ v[:,:r].T
        worst_rec = max(worst_rec, ((e-a).norm()/e.norm()).item())
    print(f"r={r} niter={niter} max rel err sigma {worst_s:.2e} rank-r product {worst_rec:.2e} lowrank {tl:.2f}s", flush=True)
