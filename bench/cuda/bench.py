"""bench/cuda/bench.py - sdpa_cuda.h against PyTorch's SDPA backends, same inputs, same run.

Usage: python3 bench/cuda/bench.py LIB.so [--quick] [--decode | --prefill] [--base=OLD.so]
--decode, --prefill: that table alone; --base: another build of the library (an
older header, say) timed on the same decode inputs, in a column of its own.
Prints the ceilings (bf16 matmul, device copy), a prefill table (TFLOP/s) and a
decode table (GB/s of K/V read, microseconds; ours I8 and PyTorch's flash and
cuDNN also timed with the L2 emptied by a read, see bench_clean); each of our
results is checked against PyTorch's output first (relative L2). Under each
decode row, ours I8 (and base I8) as a caller's loop sees it: the host's cost
of a call (50 calls enqueued behind a sleep kernel) and the wall time per call
of 200 back to back (bench_kv_host in bench_lib.cu)."""
import ctypes, sys, math
import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
import triton.testing

quick = "--quick" in sys.argv
decode_only = "--decode" in sys.argv
prefill_only = "--prefill" in sys.argv
base_path = next((a[7:] for a in sys.argv if a.startswith("--base=")), None)
P = ctypes.c_void_p
LL = ctypes.c_longlong


def load(path):
    lb = ctypes.CDLL(path)
    lb.bench_attention.argtypes = [P, P, P, P, ctypes.c_int, LL, LL, LL, LL, LL, ctypes.c_int, ctypes.c_int, P]
    if hasattr(lb, "bench_attention_p"):
        lb.bench_attention_p.argtypes = [P, P, P, P, ctypes.c_int, LL, LL, LL, LL, LL, ctypes.c_int, ctypes.c_int, ctypes.c_int, P]
    lb.bench_kv_create.restype = P
    lb.bench_kv_create.argtypes = [ctypes.c_int, LL, LL, LL, LL, LL]
    lb.bench_kv_append.argtypes = [P, LL, P, P, ctypes.c_int, LL, LL, LL, P]
    lb.bench_kv_attention.argtypes = [P, P, P, ctypes.c_int, LL, LL, LL, P]
    lb.bench_kv_destroy.argtypes = [P]
    if hasattr(lb, "bench_kv_host"):
        lb.bench_kv_host.argtypes = [P, P, P, ctypes.c_int, LL, LL, LL, P, ctypes.c_int, ctypes.POINTER(ctypes.c_double)]
    return lb


lib = load(sys.argv[1])
base = load(base_path) if base_path else None
F16, BF16, I8 = 1, 2, 3
dev = torch.device("cuda")
stream = lambda: ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)


def bench(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e-3  # seconds


_flush = None


def bench_clean(fn, reps=100):
    """Like bench, but the L2 is emptied by reading 256 MiB (a sum) instead of
    do_bench's zeroing: zeroing leaves the L2 full of dirty lines, and writing
    them back (0.7-12 us on an H100 in session 30) is charged to the timed call."""
    global _flush
    if _flush is None:
        _flush = torch.empty(1 << 26, device=dev, dtype=torch.float32).uniform_()
    fn()
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for s, e in ev:
        _flush.sum()
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    t = sorted(s.elapsed_time(e) for s, e in ev)
    return t[len(t) // 2] * 1e-3  # seconds


def rel(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm()).item()


name = torch.cuda.get_device_name()
print(f"device: {name}, torch {torch.__version__}")
n = 8192
a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
mm = 2 * n**3 / bench(lambda: a @ b) / 1e12
del a, b
x = torch.randn(1 << 30, device=dev, dtype=torch.float32)  # 4 GiB
y = torch.empty_like(x)
bw = 2 * x.numel() * 4 / bench(lambda: y.copy_(x)) / 1e9
del x, y
print(f"ceilings: bf16 matmul {mm:.0f} TFLOP/s, device copy {bw:.0f} GB/s (read + write)")

backends = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)]


def torch_run(be, q, k, v, causal, gqa=False):
    with sdpa_kernel([be]):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)


rows = []
cfgs = []
for D, H in ((128, 32), (64, 32), (256, 16)):
    Ls = (1024, 2048, 4096, 8192, 16384) if D == 128 else (1024, 4096, 16384)
    if quick:
        Ls = (4096,)
    for L in Ls:
        for causal in (False, True):
            if not decode_only:
                cfgs.append((D, H, L, causal))
if cfgs:
    print("\nprefill, bf16, batch = 16k tokens / L; TFLOP/s (4 B H L^2 D, halved when causal); ours checked vs flash (rel L2)")
    print("int8: params.precision = SDPA_PRECISION_INT8_QK (Q.K^T on int8, K smoothed), the pre-pass over Q and K included")
    print("ours: the kernel AUTO picks (wgmma on Hopper with an sm_90a build); mma: the mma.sync kernel forced")
    print(f"{'hd':>4} {'H':>3} {'L':>6} {'causal':>6} | {'ours':>7} {'mma':>7} {'int8':>7} {'flash':>7} {'cudnn':>7} {'effic':>7} | {'ours/flash':>10} {'int8/flash':>10} {'ours/cudnn':>10} {'of mm':>6} | {'relL2':>8} {'int8':>8}")
for D, H, L, causal in cfgs:
    B = max(1, 16384 // L)
    q, k, v = (torch.randn(B, H, L, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
    o = torch.empty_like(q)
    run = lambda: lib.bench_attention(q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), BF16, B, H, H, L, D, int(causal), 0, stream())
    rc = run()
    torch.cuda.synchronize()
    flops = 4 * B * H * L * L * D / (2 if causal else 1)
    res = {}
    ref = None
    for nm, be in backends:
        try:
            r = torch_run(be, q, k, v, causal)
            if ref is None:
                ref = r
            res[nm] = flops / bench(lambda: torch_run(be, q, k, v, causal)) / 1e12
        except Exception as e:
            res[nm] = float("nan")
    err = rel(o, ref) if (rc == 0 and ref is not None) else float("nan")
    ours = flops / bench(run) / 1e12 if rc == 0 else float("nan")
    om = torch.empty_like(q)
    runm = lambda: lib.bench_attention(q.data_ptr(), k.data_ptr(), v.data_ptr(), om.data_ptr(), BF16, B, H, H, L, D, int(causal), 2, stream())
    rcm = runm()
    torch.cuda.synchronize()
    mma = flops / bench(runm) / 1e12 if (rcm == 0 and ref is not None and rel(om, ref) < 2e-2) else float("nan")
    o8 = torch.empty_like(q)
    run8 = lambda: lib.bench_attention_p(q.data_ptr(), k.data_ptr(), v.data_ptr(), o8.data_ptr(), BF16, B, H, H, L, D, int(causal), 0, 1, stream())
    rc8 = run8()
    torch.cuda.synchronize()
    err8 = rel(o8, ref) if (rc8 == 0 and ref is not None) else float("nan")
    i8 = flops / bench(run8) / 1e12 if rc8 == 0 else float("nan")
    if base:
        brun = lambda: base.bench_attention(q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), BF16, B, H, H, L, D, int(causal), 0, stream())
        bt = flops / bench(brun) / 1e12 if brun() == 0 else float("nan")
        print(f"     base (--base) {bt:7.1f} TFLOP/s, ours/base {ours / bt:5.2f}")
    print(f"{D:>4} {H:>3} {L:>6} {str(causal):>6} | {ours:7.1f} {mma:7.1f} {i8:7.1f} {res['flash']:7.1f} {res['cudnn']:7.1f} {res['efficient']:7.1f} | "
          f"{ours / res['flash']:10.2f} {i8 / res['flash']:10.2f} {ours / res['cudnn']:10.2f} {ours / mm:6.2f} | {err:8.1e} {err8:8.1e}")
    del q, k, v, o, o8, om, ref
    torch.cuda.empty_cache()

if not prefill_only:
    print("\ndecode, bf16 q/out, hd 128, 32 q heads, one query per sequence; GB/s of K/V read (I8: int8 + scales), microseconds")
    print("ours f16: an F16 cache with an F16 query and out (its rel. L2 against the bf16 reference)")
    print("clean L2: ours i8 and flash/cudnn timed again with the L2 emptied by a 256 MiB read instead of do_bench's zeroing (us; i8 tok/s vs the better of the two)")
    print(f"{'B':>3} {'ctx':>6} {'Hkv':>4} | {'base bf16':>15} {'base i8':>15} {'base f16':>15} | {'ours bf16':>15} {'ours i8':>15} {'ours f16':>15} {'flash':>15} {'cudnn':>15} {'effic':>15} | {'bf16/cudnn':>10} {'i8 tok/s vs best torch':>22} {'of copy bw':>10} | {'relL2 bf16':>10} {'i8':>8} {'f16':>8} | {'clean: i8':>9} {'flash':>7} {'cudnn':>7} {'i8 vs torch':>11}")
dcfg = [(B, ctx, hkv) for B in (1, 16, 64) for ctx in (4096, 32768) for hkv in (32, 8)]
if quick:
    dcfg = [(16, 4096, 8), (1, 32768, 32)]
if prefill_only:
    dcfg = []
for B, ctx, Hkv in dcfg:
    D, Hq = 128, 32
    k = torch.randn(B, Hkv, ctx, D, device=dev, dtype=torch.bfloat16)
    v = torch.randn(B, Hkv, ctx, D, device=dev, dtype=torch.bfloat16)
    q = torch.randn(B, Hq, 1, D, device=dev, dtype=torch.bfloat16)
    kvbytes = 2 * B * Hkv * ctx * D * 2
    res = {}
    best = None
    ref = None
    for nm, be in backends:
        try:
            r = torch_run(be, q, k, v, False, gqa=Hkv != Hq)
            if ref is None:
                ref = r
            t = bench(lambda: torch_run(be, q, k, v, False, gqa=Hkv != Hq))
            res[nm] = t
            best = t if best is None else min(best, t)
        except Exception:
            res[nm] = float("nan")
    clean = {}
    for nm, be in backends:
        if nm not in ("flash", "cudnn"):
            continue
        try:
            clean[nm] = bench_clean(lambda: torch_run(be, q, k, v, False, gqa=Hkv != Hq))
        except Exception:
            clean[nm] = float("nan")
    ours = {}
    errs = {}
    hosts = {}
    qh = q.half()
    for nm, dt, lb in (("bf16", BF16, lib), ("i8", I8, lib), ("f16", F16, lib), ("base_bf16", BF16, base), ("base_i8", I8, base), ("base_f16", F16, base)):
        if lb is None:
            ours[nm] = float("nan"); errs[nm] = float("nan"); continue
        ps = 64
        c = lb.bench_kv_create(dt, B, Hkv, D, ps, B * ((ctx + ps - 1) // ps))
        if not c:
            ours[nm] = float("nan"); errs[nm] = float("nan"); continue
        qdt, qq = (F16, qh) if dt == F16 else (BF16, q) # F16 pages: an F16 query and out (K, V converted per sequence)
        arc = 0
        for s in range(B):
            kk, vv = (k[s:s + 1].half(), v[s:s + 1].half()) if dt == F16 else (k[s:s + 1], v[s:s + 1])
            arc |= lb.bench_kv_append(c, s, kk.data_ptr(), vv.data_ptr(), qdt, Hkv, ctx, D, stream())
            torch.cuda.synchronize() # kk, vv may be freed now
        if arc:
            lb.bench_kv_destroy(c)
            ours[nm] = float("nan"); errs[nm] = float("nan"); continue
        o = torch.empty_like(qq)
        run = lambda: lb.bench_kv_attention(c, qq.data_ptr(), o.data_ptr(), qdt, B, Hq, D, stream())
        rc = run()
        torch.cuda.synchronize()
        errs[nm] = rel(o, ref) if (rc == 0 and ref is not None) else float("nan")
        ours[nm] = bench(run) if rc == 0 else float("nan")
        if nm == "i8":
            clean["i8"] = bench_clean(run) if rc == 0 else float("nan")
        if nm in ("i8", "base_i8") and rc == 0 and hasattr(lb, "bench_kv_host"):
            hb = (ctypes.c_double * 2)()
            hh, ww = [], []
            for _ in range(5):
                torch.cuda.synchronize()
                torch.cuda._sleep(100_000_000)  # ~50 ms: the GPU stays busy while 50 calls are enqueued
                if lb.bench_kv_host(c, qq.data_ptr(), o.data_ptr(), qdt, B, Hq, D, stream(), 50, hb) == 0:
                    hh.append(hb[0])
                torch.cuda.synchronize()
                if lb.bench_kv_host(c, qq.data_ptr(), o.data_ptr(), qdt, B, Hq, D, stream(), 200, hb) == 0:
                    ww.append(hb[1])
            if hh and ww:
                hosts[nm] = (sorted(hh)[len(hh) // 2], sorted(ww)[len(ww) // 2])
        lb.bench_kv_destroy(c)
        torch.cuda.synchronize()
    ci8 = clean.get("i8", float("nan"))
    ctb = min([t for t in (clean["flash"], clean["cudnn"]) if t == t], default=float("nan"))
    i8bytes = B * Hkv * ctx * (D + 4) * 2
    g = lambda t, by=kvbytes: f"{by / t / 1e9:7.0f} {t * 1e6:7.1f}"
    cud = res.get("cudnn", float("nan"))
    print(f"{B:>3} {ctx:>6} {Hkv:>4} | {g(ours['base_bf16'])} {g(ours['base_i8'], i8bytes)} {g(ours['base_f16'])} | {g(ours['bf16'])} {g(ours['i8'], i8bytes)} {g(ours['f16'])} {g(res['flash'])} {g(cud)} {g(res['efficient'])} | "
          f"{cud / ours['bf16']:10.2f} {best / ours['i8'] if best else float('nan'):22.2f} {kvbytes / ours['bf16'] / 1e9 / bw:10.2f} | "
          f"{errs['bf16']:10.1e} {errs['i8']:8.1e} {errs['f16']:8.1e} | "
          f"{ci8 * 1e6:9.1f} {clean['flash'] * 1e6:7.1f} {clean['cudnn'] * 1e6:7.1f} {ctb / ci8:11.2f}")
    if hosts:  # medians of 5: host us per call to enqueue 50 calls behind a sleep kernel; wall us per call of 200 back to back
        print("      i8, us per call: host enqueue (GPU busy) / wall of 200 back to back: " +
              ", ".join(f"{nm} {h:.2f} / {w:.2f}" for nm, (h, w) in sorted(hosts.items())))
    del k, v, q, ref, qh
    torch.cuda.empty_cache()
