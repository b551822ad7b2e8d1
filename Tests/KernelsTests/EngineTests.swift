import Core
import Testing
@testable import Kernels

/// bf16 products: each operand is rounded to nearest bf16 once (relative error ≤ 2⁻⁸,
/// the unit roundoff of an 8-bit significand), so one term a·b is off by at most
/// (1 + 2⁻⁸)² − 1 < 2⁻⁷ of |a·b|, and a k-term sum by at most 2⁻⁷·Σ|a·b| plus fp32
/// accumulation (≤ k·2⁻²⁴·Σ|a·b|). The bound below is that, with the accumulation
/// term for k ≤ 4096 rounded up: it holds whatever the reduction length, because the
/// error is relative to Σ|a·b| and not to the result.
func bf16Bound(_ absSum: Double, k: Int) -> Double { absSum * (0x1p-7 + Double(k) * 0x1p-24) + 1e-6 }

@Suite("matrix-product funnel")
struct MatMulTests {
    @Test(arguments: GEMMBackend.allCases, [(false, false), (false, true), (true, false), (true, true)])
    func fp32MatchesReferenceOnEveryBackend(backend: GEMMBackend, trans: (Bool, Bool)) {
        let (transA, transB) = trans
        var rng = Xoshiro256(seed: 11)
        let m = 37, n = 29, k = 45
        let lda = (transA ? m : k) + 3, ldb = (transB ? k : n) + 2, ldc = n + 4
        let a = Buf(random: (transA ? k : m) * lda, rng: &rng)
        let b = Buf(random: (transB ? n : k) * ldb, rng: &rng)
        let c0 = Buf(random: m * ldc, rng: &rng)
        let fast = c0.copy(), slow = c0.copy()
        MatMul.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.7, a: a.p, lda: lda,
                    b: b.p, ldb: ldb, beta: 0.3, c: fast.p, ldc: ldc, mode: MatMulMode(.fp32, backend: backend))
        Reference.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.7, a: a.p, lda: lda,
                        b: b.p, ldb: ldb, beta: 0.3, c: slow.p, ldc: ldc)
        #expect(maxAbsDiff(fast, slow) < 1e-4)
        for r in 0 ..< m { for j in n ..< ldc { #expect(fast.p[r * ldc + j] == c0.p[r * ldc + j]) } }
    }

    @Test(arguments: [(false, false), (false, true), (true, false), (true, true)])
    func bf16IsTheProductOfRoundedOperandsInFP32(trans: (Bool, Bool)) {
        let (transA, transB) = trans
        var rng = Xoshiro256(seed: 12)
        let m = 33, n = 70, k = 300
        let lda = transA ? m : k, ldb = transB ? k : n, ldc = n
        let a = Buf(random: (transA ? k : m) * lda, rng: &rng)
        let b = Buf(random: (transB ? n : k) * ldb, rng: &rng)
        let c0 = Buf(random: m * ldc, rng: &rng)
        let fast = c0.copy()
        MatMul.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5, a: a.p, lda: lda,
                    b: b.p, ldb: ldb, beta: 1, c: fast.p, ldc: ldc, mode: .bf16)
        // (1) Against the exact product of the bf16-rounded operands: fp32 accumulation only.
        let ra = a.copy(), rb = b.copy()
        for i in 0 ..< ra.count { ra.p[i] = BF16.round(ra.p[i]) }
        for i in 0 ..< rb.count { rb.p[i] = BF16.round(rb.p[i]) }
        let rounded = c0.copy()
        Reference.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5, a: ra.p, lda: lda,
                        b: rb.p, ldb: ldb, beta: 1, c: rounded.p, ldc: ldc)
        #expect(maxAbsDiff(fast, rounded) < 1e-3)
        // (2) Against the fp32 product: within the bf16 bound of each element, and not
        // equal to it (the operands really were rounded).
        let exact = c0.copy()
        Reference.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5, a: a.p, lda: lda,
                        b: b.p, ldb: ldb, beta: 1, c: exact.p, ldc: ldc)
        var worst = 0.0, differs = 0
        for i in 0 ..< m {
            for j in 0 ..< n {
                var absSum = 0.0
                for p in 0 ..< k {
                    let av = transA ? a.p[p * lda + i] : a.p[i * lda + p], bv = transB ? b.p[j * ldb + p] : b.p[p * ldb + j]
                    absSum += 0.5 * Double(abs(av * bv))
                }
                let err = Double(abs(fast.p[i * ldc + j] - exact.p[i * ldc + j]))
                #expect(err <= bf16Bound(absSum, k: k))
                worst = max(worst, err / absSum)
                if err > 1e-5 { differs += 1 }
            }
        }
        #expect(differs > m * n / 2, "bf16 results equal fp32 ones: the operands were not rounded")
        print("bf16 gemm \(transA ? "T" : "N")\(transB ? "T" : "N"): worst error / Σ|a·b| = \(worst) (bound 2^-7 = \(0x1p-7))")
    }

    /// Heads read straight out of a fused (B, N, 3, H, hd) tensor, with alpha and beta.
    @Test(arguments: [MatMulMode(.fp32, backend: .onednn), MatMulMode(.fp32, backend: .openblas), .bf16])
    func batchedHeadsMatchOneProductPerHead(mode: MatMulMode) {
        var rng = Xoshiro256(seed: 13)
        let batch = 3, heads = 2, n = 11, hd = 5, d = heads * hd, ld = 3 * d
        let qkv = Buf(random: batch * n * ld, rng: &rng)
        if mode.precision == .bf16 { for i in 0 ..< qkv.count { qkv.p[i] = BF16.round(qkv.p[i]) } }
        let c0 = Buf(random: batch * heads * n * n, rng: &rng)
        let fast = c0.copy(), slow = c0.copy()
        let q = StridedOperand(batch: batch, heads: heads, rows: n, cols: hd, batchStride: n * ld, headStride: hd, rowStride: ld)
        let kT = StridedOperand(batch: batch, heads: heads, rows: hd, cols: n, batchStride: n * ld, headStride: hd, rowStride: 1, colStride: ld)
        let s = StridedOperand(batch: batch, heads: heads, rows: n, cols: n, batchStride: heads * n * n, headStride: n * n, rowStride: n)
        MatMul.batched(a: .fp32(qkv.p), q, b: .fp32(qkv.p + d), kT, c: fast.p, s, alpha: 0.25, beta: 0.5, mode: mode)
        for bi in 0 ..< batch {
            for h in 0 ..< heads {
                let base = qkv.p + bi * n * ld + h * hd
                Reference.sgemm(transA: false, transB: true, m: n, n: n, k: hd, alpha: 0.25, a: base, lda: ld,
                                b: base + d, ldb: ld, beta: 0.5, c: slow.p + (bi * heads + h) * n * n, ldc: n)
            }
        }
        // Operands already bf16-exact, so bf16 differs from the reference by accumulation only.
        #expect(maxAbsDiff(fast, slow) < 1e-4)
    }

    @Test func operandsConvertedOnceServeSeveralProducts() {
        var rng = Xoshiro256(seed: 14)
        let x = Buf(random: 64, rng: &rng)
        guard case .bf16(let p) = MatMul.operand(x.p, count: 64, mode: .bf16, slot: 3) else {
            Issue.record("a bf16 operand came back as fp32"); return
        }
        for i in 0 ..< 64 { #expect(p[i] == BF16.fromFloat(x.p[i])) }
        guard case .fp32(let q) = MatMul.operand(x.p, count: 64, mode: .fp32, slot: 3) else {
            Issue.record("an fp32 operand was converted"); return
        }
        #expect(q == UnsafePointer(x.p))
    }

    @Test func attentionInBF16IsCloseToFP32() {
        var rng = Xoshiro256(seed: 15)
        let batch = 2, n = 17, heads = 3, hd = 8, d = heads * hd
        let qkv = Buf(random: batch * n * 3 * d, rng: &rng)
        let out32 = Buf(batch * n * d), out16 = Buf(batch * n * d)
        let p32 = Buf(batch * heads * n * n), p16 = Buf(batch * heads * n * n)
        Attention.forward(out: out32.p, probs: p32.p, qkv: qkv.p, batch: batch, tokens: n, heads: heads, headDim: hd)
        Attention.forward(out: out16.p, probs: p16.p, qkv: qkv.p, batch: batch, tokens: n, heads: heads, headDim: hd, mode: .bf16)
        #expect(relDiff(out32, out16) < 2e-2)
        #expect(relDiff(out32, out16) > 0, "bf16 attention equals fp32: bf16 did not run")
        let dout = Buf(random: batch * n * d, rng: &rng)
        let g32 = Buf(batch * n * 3 * d), g16 = Buf(batch * n * 3 * d), scratch = Buf(batch * heads * n * n)
        Attention.backward(dqkv: g32.p, scratch: scratch.p, dout: dout.p, probs: p32.p, qkv: qkv.p, batch: batch, tokens: n, heads: heads, headDim: hd)
        Attention.backward(dqkv: g16.p, scratch: scratch.p, dout: dout.p, probs: p16.p, qkv: qkv.p, batch: batch, tokens: n, heads: heads, headDim: hd, mode: .bf16)
        #expect(relDiff(g32, g16) < 3e-2)
    }

    /// A linear layer's three products in bf16 are the fp32 products of rounded operands.
    @Test func linearInBF16() {
        var rng = Xoshiro256(seed: 17)
        let rows = 40, i = 24, o = 36
        let x = Buf(random: rows * i, rng: &rng), w = Buf(random: o * i, rng: &rng), dy = Buf(random: rows * o, rng: &rng)
        for t in [x, w, dy] { for j in 0 ..< t.count { t.p[j] = BF16.round(t.p[j]) } }
        let y = Buf(rows * o), yr = Buf(rows * o)
        Linear.forward(y: y.p, x: x.p, weight: w.p, bias: nil, rows: rows, inFeatures: i, outFeatures: o, mode: .bf16)
        Reference.linearForward(y: yr.p, x: x.p, weight: w.p, bias: nil, rows: rows, inFeatures: i, outFeatures: o)
        #expect(maxAbsDiff(y, yr) < 1e-4)
        let dx = Buf(rows * i), dw = Buf(o * i), dxr = Buf(rows * i), dwr = Buf(o * i)
        Linear.backward(dx: dx.p, dweight: dw.p, dbias: nil, dy: dy.p, x: x.p, weight: w.p, rows: rows, inFeatures: i, outFeatures: o, mode: .bf16)
        Reference.linearBackward(dx: dxr.p, dweight: dwr.p, dbias: nil, dy: dy.p, x: x.p, weight: w.p, rows: rows, inFeatures: i, outFeatures: o)
        #expect(maxAbsDiff(dx, dxr) < 1e-4 && maxAbsDiff(dw, dwr) < 1e-4)
    }

    @Test func zeroInnerDimensionScalesByBeta() {
        let c = Buf(6)
        for i in 0 ..< 6 { c.p[i] = Float(i) }
        let dummy = Buf(1)
        MatMul.gemm(transA: false, transB: false, m: 2, n: 3, k: 0, alpha: 1, a: dummy.p, lda: 1, b: dummy.p, ldb: 3,
                    beta: 0.5, c: c.p, ldc: 3, mode: .bf16)
        #expect(c.array == [0, 0.5, 1, 1.5, 2, 2.5])
    }
}

@Suite("bfloat16")
struct BF16Tests {
    @Test func roundsToNearestEven() {
        // 1 + 2⁻⁸ is exactly halfway between 1 and 1 + 2⁻⁷: ties go to the even (1).
        #expect(BF16.fromFloat(1 + 0x1p-8) == 0x3F80)
        // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ (odd) and 1 + 2⁻⁶: it goes up.
        #expect(BF16.fromFloat(1 + 3 * 0x1p-8) == 0x3F82)
        #expect(BF16.fromFloat(1 + 0x1p-8 + 0x1p-20) == 0x3F81)
        #expect(BF16.toFloat(0x3F80) == 1)
        #expect(BF16.toFloat(BF16.fromFloat(-2.5)) == -2.5)
    }

    @Test func specialValuesSurvive() {
        #expect(BF16.toFloat(BF16.fromFloat(.infinity)) == .infinity)
        #expect(BF16.toFloat(BF16.fromFloat(-.infinity)) == -.infinity)
        #expect(BF16.toFloat(BF16.fromFloat(.nan)).isNaN)
        // A NaN whose payload sits only in the low 16 bits must not become ∞.
        #expect(BF16.toFloat(BF16.fromFloat(Float(bitPattern: 0x7F80_0001))).isNaN)
        // The largest float rounds up to ∞ in bf16, as round-to-nearest says.
        #expect(BF16.toFloat(BF16.fromFloat(.greatestFiniteMagnitude)) == .infinity)
    }

    @Test func bulkConversionEqualsTheScalarOne() {
        var rng = Xoshiro256(seed: 16)
        let n = 1000
        let x = Buf(random: n, rng: &rng, scale: 100)
        x.p[3] = .nan; x.p[17] = Float(bitPattern: 0x7F80_0001); x.p[40] = .infinity; x.p[41] = -0.0
        let out = UnsafeMutablePointer<UInt16>.allocate(capacity: n)
        defer { out.deallocate() }
        BF16.convert(out, x.p, count: n)
        for i in 0 ..< n { #expect(out[i] == BF16.fromFloat(x.p[i]), "element \(i): \(x.p[i])") }
        // Relative error of rounding is at most 2⁻⁸.
        for i in 0 ..< n where x.p[i].isFinite && x.p[i] != 0 {
            #expect(abs(BF16.toFloat(out[i]) - x.p[i]) <= abs(x.p[i]) * 0x1p-8)
        }
    }
}

@Suite("kernel choice by CPU features")
struct EngineChoiceTests {
    static let emeraldRapids = CPUFeatures(flags: ["avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq",
                                                   "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"])
    static let zen4 = CPUFeatures(flags: ["avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16"])
    static let haswell = CPUFeatures(flags: ["avx", "avx2", "fma"])

    func facts(_ cpu: CPUFeatures, openBLAS core: String, set: String? = nil, dnnl: ISALevel? = nil, dnnlError: String? = nil) -> Engine.Facts {
        Engine.Facts(cpu: cpu, isX86_64: true, oneDNNError: dnnlError, oneDNNLevel: dnnl ?? cpu.level, oneDNNISA: "isa",
                     openBLASCore: core, openBLASCoreType: set)
    }

    @Test func levelsComeFromFeatureFlags() {
        #expect(Self.emeraldRapids.level == .amx)
        #expect(Self.zen4.level == .avx512bf16)
        #expect(Self.haswell.level == .avx2)
        #expect(CPUFeatures(flags: ["sse3"]).level == .sse3)
        // AVX-512 foundation alone, without BW/VL/DQ, is not counted as AVX-512.
        #expect(CPUFeatures(flags: ["avx2", "fma", "avx512f"]).level == .avx2)
        let parsed = CPUFeatures(cpuinfo: "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx avx2 fma avx512f avx512bw avx512vl avx512dq\n")
        #expect(parsed.level == .avx512 && parsed.modelName == "Test CPU")
    }

    @Test func autoPicksOneDNNOnX86AndOpenBLASElsewhere() {
        #expect(Engine.decide(backend: .auto, precision: .fp32, facts: facts(Self.zen4, openBLAS: "Cooperlake")).backend == .onednn)
        var arm = facts(CPUFeatures(flags: ["asimd"]), openBLAS: "NEOVERSEN1")
        arm.isX86_64 = false
        #expect(Engine.decide(backend: .auto, precision: .fp32, facts: arm).backend == .openblas)
        let failing = Engine.decide(backend: .onednn, precision: .fp32, facts: facts(Self.zen4, openBLAS: "Cooperlake", dnnlError: "no engine"))
        #expect(failing.backend == .openblas && failing.warnings.count == 1)
    }

    /// What Debian's OpenBLAS 0.3.21 did on Emerald Rapids: generic Prescott kernels.
    @Test func genericOpenBLASKernelsOnANewCPUAreReported() {
        let r = Engine.decide(backend: .openblas, precision: .fp32, facts: facts(Self.emeraldRapids, openBLAS: "Prescott"))
        #expect(r.backend == .openblas)
        #expect(r.warnings.count == 1)
        #expect(r.warnings.first?.contains("Prescott") == true && r.warnings.first?.contains("OPENBLAS_CORETYPE=Cooperlake") == true)
        #expect(r.summary.contains("Prescott"))
        // The same on OpenBLAS's best family for the CPU: nothing to say.
        #expect(Engine.decide(backend: .openblas, precision: .fp32, facts: facts(Self.emeraldRapids, openBLAS: "Cooperlake")).warnings.isEmpty)
        // A user's own OPENBLAS_CORETYPE is named in the warning (and left alone).
        let forced = Engine.decide(backend: .openblas, precision: .fp32, facts: facts(Self.zen4, openBLAS: "Haswell", set: "Haswell"))
        #expect(forced.warnings.first?.contains("OPENBLAS_CORETYPE=Haswell is set") == true)
        // oneDNN does not depend on OpenBLAS's choice.
        #expect(Engine.decide(backend: .onednn, precision: .fp32, facts: facts(Self.emeraldRapids, openBLAS: "Prescott")).warnings.isEmpty)
        // oneDNN held below the CPU (e.g. ONEDNN_MAX_CPU_ISA) is reported too.
        #expect(Engine.decide(backend: .onednn, precision: .fp32, facts: facts(Self.emeraldRapids, openBLAS: "Cooperlake", dnnl: .avx2)).warnings.count == 1)
    }

    @Test func bf16NeedsNativeProducts() {
        let amx = Engine.decide(backend: .auto, precision: .bf16, facts: facts(Self.emeraldRapids, openBLAS: "Cooperlake"))
        #expect(amx.precision == .bf16 && amx.warnings.isEmpty)
        let avx2 = Engine.decide(backend: .auto, precision: .bf16, facts: facts(Self.haswell, openBLAS: "Haswell"))
        #expect(avx2.precision == .fp32)
        #expect(avx2.warnings.first?.contains("running fp32") == true)
        // bf16 with OpenBLAS as the fp32 backend: bf16 products on oneDNN, said so.
        let mixed = Engine.decide(backend: .openblas, precision: .bf16, facts: facts(Self.zen4, openBLAS: "Cooperlake"))
        #expect(mixed.precision == .bf16 && mixed.summary.contains("bf16 products"))
    }

    @Test func openBLASIsRestartedWithFittingKernelsOnlyWhenItChoseWorse() {
        #expect(Engine.openBLASCoreToSet(environment: [:], runningCore: "Prescott", cpu: Self.emeraldRapids) == "Cooperlake")
        #expect(Engine.openBLASCoreToSet(environment: [:], runningCore: "Prescott", cpu: Self.haswell) == "Haswell")
        #expect(Engine.openBLASCoreToSet(environment: [:], runningCore: "Cooperlake", cpu: Self.emeraldRapids) == nil)
        #expect(Engine.openBLASCoreToSet(environment: [:], runningCore: "Zen", cpu: Self.haswell) == nil)
        // The user's setting wins, and a restarted process never restarts again.
        #expect(Engine.openBLASCoreToSet(environment: ["OPENBLAS_CORETYPE": "Prescott"], runningCore: "Prescott", cpu: Self.zen4) == nil)
        #expect(Engine.openBLASCoreToSet(environment: ["SVITE_OPENBLAS_RELAUNCHED": "1"], runningCore: "Prescott", cpu: Self.zen4) == nil)
        // Unknown core names are left alone rather than guessed at.
        #expect(Engine.openBLASCoreToSet(environment: [:], runningCore: "SomethingNew", cpu: Self.zen4) == nil)
    }

    @Test func thisMachineIsReportedWithoutContradictions() {
        let r = Engine.decide(backend: .auto, precision: .bf16, facts: .current())
        #expect(r.summary.contains("matrix products"))
        #expect(r.cpuLevel == CPUFeatures.current.level)
        if r.cpuLevel.hasNativeBF16 { #expect(r.precision == .bf16) } else { #expect(r.precision == .fp32) }
        // oneDNN sees at least the level the flags give (it reads the same CPU).
        #expect(OneDNN.effectiveLevel >= min(CPUFeatures.current.level, .avx512bf16) || CPUFeatures.current.level < .avx2)
    }
}
