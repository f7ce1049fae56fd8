"""pig's core: pure operations, tensors (or arrays) in and tensors out; no files, no CLI.

Stages (HDF5 adapters), training and benchmarks all call these, so each operation exists once:

    device     device and precision choice, autocast
    selection  ITS top-k patch choice and lookup in the kept patches       (docs/method.md s.2)
    methods    each method's video embedding and xpool scores            (s.3, s.4, s.8)
    text       tokenising and embedding query text                         (s.5)
    losses     symmetric cross-entropy, L_ret, L_gen, the clamped temperature (s.6, s.7)
    search     exact blocked top-k inner-product search                     (s.5)
    metrics    ranks, R@K, MdR, MnR, DSL                                    (s.9)
    cost       multiply-adds per query of each method                       (s.7, s.8)
"""
