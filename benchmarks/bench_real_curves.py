"""Coverage of the verdicts' own predictions on real checkpoint curves (Pythia, ../shared/data).

    python benchmarks/bench_real_curves.py

For every post-warm-up accuracy curve that is not degrading (classes defined without any law, as in
../shared/tools/real-curves-check), diagnose the first half and the first two thirds with
``budget_tokens`` set to the curve's last checkpoint, and check whether the 90% interval of the
prediction holds the last measured value. Prints how often a prediction was given, its coverage
(per class and per chosen law), the median error and the median interval width.
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from transfer_probe.diagnose import diagnose_rows

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pythia-deduped" / "evals.csv"
if not DATA.exists():
    sys.exit(f"bench_real_curves: {DATA} not found (the shared data sit next to the repository)")
df = pd.read_csv(DATA)
POST=2e9
def classify(y, se):
    n=len(y); sig=float(np.median(se)); mid, last3 = y[n//3:2*n//3].mean(), y[-3:].mean()
    roll=np.convolve(y[:-3], np.ones(3)/3, mode="valid"); ipk=int(np.argmax(roll))
    if last3-mid>=sig: return "healthy"
    if roll[ipk]-last3>=2*sig and last3<mid: return "degrading"
    return "flat"
res=[]
for (run, shots, task), g in df.groupby(["run","shots","task"]):
    g=g.sort_values("tokens"); h=g[g.tokens>=POST]
    if len(h)<8: continue
    y,se=h.acc.values*100,h.acc_stderr.values*100; x=h.tokens.values.astype(float)
    c=classify(y,se)
    if c=="degrading": continue
    b=g[g.step==0]
    base=[{"tokens":0.0,"acc":float(b.acc.values[0]*100),"acc_sem":float(b.acc_stderr.values[0]*100)}] if len(b) else []
    n=len(y)
    for k in (n//2, (2*n)//3):
        rows=base+[{"tokens":float(t),"acc":float(a),"acc_sem":float(s)} for t,a,s in zip(x[:k],y[:k],se[:k])]
        v=diagnose_rows(rows,x="tokens",y="acc",ce=None,budget_tokens=float(x[-1]))
        p=v.prediction or {}
        if v.status=="aligned" and p.get("mean") is not None:
            res.append(dict(cls=c,k=k,given=True,cov=p["low"]<=y[-1]<=p["high"],err=abs(p["mean"]-y[-1]),law=v.law,w=p["high"]-p["low"]))
        else:
            res.append(dict(cls=c,k=k,given=False,status=v.status))
r=pd.DataFrame(res)
print("prediction given:", r.groupby("cls").given.mean().round(3).to_dict())
g=r[r.given]
print(g.groupby(["cls"])["cov"].agg(["mean","count"]))
print(g.groupby(["law"])["cov"].agg(["mean","count"]))
print("median err", g.err.median(), "median width", g.w.median())
