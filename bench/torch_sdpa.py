#!/usr/bin/env python3
"""bench/torch_sdpa.py - PyTorch's CPU scaled_dot_product_attention beside
sdpa.h, called through ctypes (build/libsdpa_bench.so, bench/shim.c), on the
same tensors in one process. The bench (--suite, --parity) runs it; it can
also run alone:

  python3 bench/torch_sdpa.py --lib build/libsdpa_bench.so time B Hq Hkv Lq Lk D causal threads reps
  python3 bench/torch_sdpa.py --lib build/libsdpa_bench.so parity B Hq Hkv Lq Lk D causal

Output: one "row,..." line per result (the bench parses them):
  time:   row,time,<impl>,<dtype>,threads,median_s,min_s,max_s,max_abs,rel_l2,cosine
  parity: row,parity,<a>,<b>,max_abs,rel_l2,cosine
  python3 bench/torch_sdpa.py decode Hq Hkv ctx D threads reps warmup evict
  decode: row,decode,torch,<dtype>,threads,median_s,min_s,max_s,kv_bytes
(decode needs no --lib: one query token over K/V of ctx keys, torch's own
tensors; with evict 1, 512 MiB of other memory is summed between steps, as
bench/decode.c does, so K/V come from DRAM.)
Errors are against float64 attention computed by torch from the same
(float32) values. causal is bottom-right aligned (as the bench's problems
and the KV cache are), given to torch as a mask when Lq != Lk. Without torch
it prints one "SKIP ..." line and exits 0.
"""
import ctypes
import math
import statistics
import sys
import time


def decode(args):
    """One decode step (a query token over ctx keys) per dtype, timed: bench/decode.c --torch runs it."""
    import torch
    import torch.nn.functional as F
    Hq, Hkv, ctx, D, threads, reps, warmup, evict = args
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(99)
    big = torch.ones((512 << 20) // 4, dtype=torch.int32) if evict else None
    kw = {"enable_gqa": True} if Hq != Hkv else {}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        q = (torch.rand(1, Hq, 1, D, generator=g) * 2 - 1).to(dtype)
        k = (torch.rand(1, Hkv, ctx, D, generator=g) * 2 - 1).to(dtype)
        v = (torch.rand(1, Hkv, ctx, D, generator=g) * 2 - 1).to(dtype)
        name = str(dtype).replace("torch.", "")
        try:
            ts = []
            for i in range(warmup + reps):
                t0 = time.perf_counter()
                F.scaled_dot_product_attention(q, k, v, **kw)
                t1 = time.perf_counter()
                if i >= warmup:
                    ts.append(t1 - t0)
                if big is not None:
                    big.sum()
        except Exception as e:  # noqa: BLE001 - a dtype without a CPU kernel in this build
            print(f"torch SDPA decode in {name} failed: {type(e).__name__}: {e}")
            continue
        kvb = 2 * Hkv * ctx * D * k.element_size()
        print(f"row,decode,torch,{name},{threads},{statistics.median(ts):.6e},{min(ts):.6e},{max(ts):.6e},{kvb}")
        del q, k, v
    return 0


def main(argv):
    if len(argv) >= 1 and argv[0] == "decode":
        try:
            import torch  # noqa: F401
        except Exception as e:  # noqa: BLE001 - any import failure means: no torch here
            print(f"SKIP torch is not importable by {sys.executable} ({type(e).__name__}: {e})")
            return 0
        return decode([int(a) for a in argv[1:9]])
    if len(argv) < 3 or argv[0] != "--lib":
        print(__doc__)
        return 2
    lib_path, cmd, args = argv[1], argv[2], [int(a) for a in argv[3:]]
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001 - any import failure means: no torch here
        print(f"SKIP torch is not importable by {sys.executable} ({type(e).__name__}: {e})")
        return 0
    try:
        lib = ctypes.CDLL(lib_path)
    except OSError as e:
        print(f"SKIP cannot load {lib_path} ({e}); build it with make build/libsdpa_bench.so")
        return 0
    fn = lib.sdpa_bench_attention
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] + [ctypes.c_int64] * 6 + [ctypes.c_int] * 4

    B, Hq, Hkv, Lq, Lk, D, causal = args[:7]
    g = torch.Generator().manual_seed(1234)
    q = torch.rand(B, Hq, Lq, D, generator=g) * 4 - 2
    k = torch.rand(B, Hkv, Lk, D, generator=g) * 4 - 2
    v = torch.rand(B, Hkv, Lk, D, generator=g) * 2 - 1

    # GQA: enable_gqa (torch >= 2.5) where it exists, else K/V repeated per call (then torch's time includes
    # the copy; the rows say which)
    gqa_kw = {}
    if Hq != Hkv:
        try:
            F.scaled_dot_product_attention(torch.zeros(1, 2, 1, 4), torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4),
                                           enable_gqa=True)
            gqa_kw = {"enable_gqa": True}
        except TypeError:
            print("torch has no enable_gqa: K/V repeated per call (its times include the copy)")
    mask = None
    if causal and Lq != Lk:  # bottom-right alignment
        mask = torch.arange(Lk).unsqueeze(0) <= torch.arange(Lq).unsqueeze(1) + (Lk - Lq)

    def torch_sdpa(q, k, v):
        kk, vv = k, v
        if Hq != Hkv and not gqa_kw:
            kk = k.repeat_interleave(Hq // Hkv, dim=1)
            vv = v.repeat_interleave(Hq // Hkv, dim=1)
        if mask is not None:
            return F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, **gqa_kw)
        return F.scaled_dot_product_attention(q, kk, vv, is_causal=bool(causal), **gqa_kw)

    ref = torch_sdpa(q.double(), k.double(), v.double())
    dt_code = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}

    def ours(q, k, v, threads, path=0, precision=0):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out = torch.empty(B, Hq, Lq, D, dtype=q.dtype)
        rc = fn(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), dt_code[q.dtype], B, Hq, Hkv, Lq, Lk, D,
                causal, threads, path, precision)
        return out if rc == 0 else None

    def errs(a, b):
        a, b = a.double().flatten(), b.double().flatten()
        d = a - b
        den = b.norm().item()
        cos = (a @ b).item() / (a.norm().item() * den) if den > 0 and a.norm().item() > 0 else float("nan")
        return d.abs().max().item(), d.norm().item() / (den if den > 0 else 1.0), cos

    if cmd == "time":
        threads, reps = args[7], args[8]
        torch.set_num_threads(threads)
        for dtype in (torch.float32, torch.bfloat16):
            qc, kc, vc = q.to(dtype), k.to(dtype), v.to(dtype)
            # bf16 also with SDPA_PRECISION_BF16_PV (3): P as one bf16 in P.V, as torch's kernels take it
            impls = ("torch", "sdpa_ctypes") + (("sdpa_ctypes_bf16pv",) if dtype == torch.bfloat16 else ())
            for impl in impls:
                prec = 3 if impl == "sdpa_ctypes_bf16pv" else 0
                call = (lambda: torch_sdpa(qc, kc, vc)) if impl == "torch" else \
                    (lambda: ours(qc, kc, vc, threads, 0, prec))
                out = None
                try:
                    for _ in range(3):
                        out = call()
                except Exception as e:  # noqa: BLE001 - report and go on with the other rows
                    print(f"[{impl}] {dtype} failed: {type(e).__name__}: {e}")
                    continue
                if out is None:
                    print(f"[{impl}] {dtype} failed")
                    continue
                ts = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    call()
                    ts.append(time.perf_counter() - t0)
                e = errs(out, ref)
                name = str(dtype).replace("torch.", "")
                print(f"row,time,{impl},{name},{threads},{statistics.median(ts):.6e},{min(ts):.6e},{max(ts):.6e},"
                      f"{e[0]:.3e},{e[1]:.3e},{e[2]:.8f}")
        return 0

    if cmd == "parity":
        outs = {}
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            name = str(dtype).replace("torch.", "")
            qc, kc, vc = q.to(dtype), k.to(dtype), v.to(dtype)
            try:
                outs[f"torch_{name}"] = torch_sdpa(qc, kc, vc)
            except Exception as e:  # noqa: BLE001 - a dtype this torch build has no CPU kernel for
                print(f"torch SDPA in {name} failed: {type(e).__name__}: {e}")
            for path, pname in ((1, "scalar"), (0, "auto")):
                o = ours(qc, kc, vc, 0, path)
                if o is not None:
                    outs[f"sdpa_{pname}_{name}"] = o
        names = list(outs)
        for a in names:
            e = errs(outs[a], ref)
            print(f"row,parity,{a},float64,{e[0]:.3e},{e[1]:.3e},{e[2]:.8f}")
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                e = errs(outs[a], outs[b])
                print(f"row,parity,{a},{b},{e[0]:.3e},{e[1]:.3e},{e[2]:.8f}")
        return 0
    print(f"unknown command {cmd}")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
