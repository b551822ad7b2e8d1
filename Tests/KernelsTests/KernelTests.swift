import Core
import Testing
@testable import Kernels

// Finite-difference bound for the Float kernels (see GradientCheck): inputs ~ N(0, 1),
// step h = 1e-2, loss Σ w·y with w ~ N(0, 1) over ≤ a few hundred outputs. Float
// rounding then contributes ≲ 1e-4 absolute to a difference quotient and truncation
// ≲ 1e-4·|L'''|, so |analytic − numeric| ≤ 1e-3 + 1e-2·|numeric| holds for a correct
// backward while any wrong term (a missing factor, a transposed index) misses by O(1).
let fdStep: Float = 1e-2
let fdAtol = 1e-3
let fdRtol = 1e-2

@Suite("sgemm wrapper")
struct SgemmTests {
    // The product against the naive twin on each backend: MatMulTests (EngineTests.swift).

    @Test func bufferFormChecksSizes() {
        var rng = Xoshiro256(seed: 2)
        let a = Buf(random: 6, rng: &rng), b = Buf(random: 6, rng: &rng), c = Buf(4)
        BLAS.sgemm(transA: false, transB: false, m: 2, n: 2, k: 3, alpha: 1,
                   a: UnsafeBufferPointer(start: a.p, count: 6), lda: 3,
                   b: UnsafeBufferPointer(start: b.p, count: 6), ldb: 2, beta: 0,
                   c: UnsafeMutableBufferPointer(start: c.p, count: 4), ldc: 2)
        let expected = a.p[0] * b.p[0] + a.p[1] * b.p[2] + a.p[2] * b.p[4]
        #expect(abs(c.p[0] - expected) < 1e-5)
    }

    @Test func threadCountIsSettable() {
        let before = BLAS.threads
        BLAS.setThreads(1)
        #expect(BLAS.threads == 1)
        BLAS.setThreads(before)
        #expect(!BLAS.coreName.isEmpty)
    }
}

@Suite("vectorised math")
struct SIMDMathTests {
    @Test func expIsAccurate() {
        var worst = 0.0
        var x: Float = -87
        while x < 88 {
            var v = Vec8()
            for j in 0 ..< 8 { v[j] = x + Float(j) * 0.0137 }
            let e = SIMDMath.exp(v)
            for j in 0 ..< 8 {
                let truth = _exp(Double(v[j]))
                worst = max(worst, abs(Double(e[j]) - truth) / truth)
            }
            x += 0.093
        }
        #expect(worst < 3e-7, "max relative error \(worst)")
        #expect(SIMDMath.exp(Vec8(repeating: -200))[0] == 0)
        #expect(SIMDMath.exp(Vec8(repeating: 0))[0] == 1)
    }

    @Test func erfIsAccurate() {
        var worstAbs = 0.0, worstRelSmall = 0.0
        var x: Float = -6
        while x < 6 {
            var v = Vec8()
            for j in 0 ..< 8 { v[j] = x + Float(j) * 0.00119 }
            let e = SIMDMath.erf(v)
            for j in 0 ..< 8 {
                let truth = Reference.erfDouble(Double(v[j]))
                worstAbs = max(worstAbs, abs(Double(e[j]) - truth))
                if abs(v[j]) < 0.5, v[j] != 0 { worstRelSmall = max(worstRelSmall, abs(Double(e[j]) - truth) / abs(truth)) }
            }
            x += 0.0107
        }
        // The rational form is good to ~1e-7 in exact arithmetic; Float evaluation of the two
        // polynomials and the division adds a few ulp (measured worst 3.9e-7).
        #expect(worstAbs < 4e-7, "max absolute error \(worstAbs)")
        #expect(worstRelSmall < 1e-6, "max relative error near 0: \(worstRelSmall)")
    }
}

@Suite("elementwise kernels: fast vs naive twin, and finite differences")
struct ElementwiseTests {
    @Test func layerNorm() {
        var rng = Xoshiro256(seed: 3)
        let rows = 5, d = 21  // 21: exercises the vector body and the scalar tail
        let x = Buf(random: rows * d, rng: &rng, scale: 2, shift: 0.5)
        let w = Buf(random: d, rng: &rng, scale: 0.5, shift: 1), b = Buf(random: d, rng: &rng)
        let y = Buf(rows * d), yr = Buf(rows * d), mean = Buf(rows), rstd = Buf(rows), mr = Buf(rows), rr = Buf(rows)
        LayerNorm.forward(y: y.p, mean: mean.p, rstd: rstd.p, x: x.p, weight: w.p, bias: b.p, rows: rows, dim: d, eps: 1e-6)
        Reference.layerNormForward(y: yr.p, mean: mr.p, rstd: rr.p, x: x.p, weight: w.p, bias: b.p, rows: rows, dim: d, eps: 1e-6)
        #expect(maxAbsDiff(y, yr) < 1e-5)

        let dy = Buf(random: rows * d, rng: &rng)
        let dx = Buf(rows * d), dw = Buf(d), db = Buf(d)
        let dxr = Buf(rows * d), dwr = Buf(d), dbr = Buf(d)
        LayerNorm.backward(dx: dx.p, dweight: dw.p, dbias: db.p, dy: dy.p, x: x.p, mean: mean.p, rstd: rstd.p, weight: w.p, rows: rows, dim: d)
        Reference.layerNormBackward(dx: dxr.p, dweight: dwr.p, dbias: dbr.p, dy: dy.p, x: x.p, mean: mr.p, rstd: rr.p, weight: w.p, rows: rows, dim: d)
        #expect(maxAbsDiff(dx, dxr) < 1e-4)
        #expect(maxAbsDiff(dw, dwr) < 1e-4)
        #expect(maxAbsDiff(db, dbr) < 1e-5)

        let loss = { () -> Double in
            LayerNorm.forward(y: y.p, mean: mean.p, rstd: rstd.p, x: x.p, weight: w.p, bias: b.p, rows: rows, dim: d, eps: 1e-6)
            return GradientCheck.weightedSum(y.p, dy.p, rows * d)
        }
        for (grad, input) in [(dx, x), (dw, w), (db, b)] {
            let r = GradientCheck.check(analytic: grad.p, input: input.p, indices: 0 ..< input.count,
                                        step: fdStep, atol: fdAtol, rtol: fdRtol, loss: loss)
            #expect(r.passed, "\(r)")
        }
    }

    @Test func gelu() {
        var rng = Xoshiro256(seed: 4)
        let n = 203
        let x = Buf(random: n, rng: &rng, scale: 3)
        let y = Buf(n), yr = Buf(n)
        GELU.forward(y.p, x.p, count: n)
        Reference.geluForward(yr.p, x.p, count: n)
        #expect(maxAbsDiff(y, yr) < 1e-6)
        let dy = Buf(random: n, rng: &rng), dx = Buf(n), dxr = Buf(n)
        GELU.backward(dx: dx.p, dy: dy.p, x: x.p, count: n)
        Reference.geluBackward(dx: dxr.p, dy: dy.p, x: x.p, count: n)
        #expect(maxAbsDiff(dx, dxr) < 1e-5)
        let r = GradientCheck.check(analytic: dx.p, input: x.p, indices: 0 ..< n, step: fdStep, atol: fdAtol, rtol: fdRtol) {
            GELU.forward(y.p, x.p, count: n)
            return GradientCheck.weightedSum(y.p, dy.p, n)
        }
        #expect(r.passed, "\(r)")
        // Exact-erf GELU, not the tanh approximation: at x = 1 they differ by 1.6e-4.
        let one = Buf(1); one.p[0] = 1
        let out = Buf(1)
        GELU.forward(out.p, one.p, count: 1)
        #expect(abs(out.p[0] - 0.8413447) < 1e-6)
    }

    @Test func softmax() {
        var rng = Xoshiro256(seed: 5)
        let rows = 4, cols = 13, scale: Float = 0.6
        let x = Buf(random: rows * cols, rng: &rng, scale: 2)
        let y = Buf(rows * cols), yr = Buf(rows * cols)
        Softmax.forward(y.p, x.p, rows: rows, cols: cols, scale: scale)
        Reference.softmaxForward(yr.p, x.p, rows: rows, cols: cols, scale: scale)
        #expect(maxAbsDiff(y, yr) < 1e-6)
        for r in 0 ..< rows {
            var s: Float = 0
            for j in 0 ..< cols { s += y.p[r * cols + j] }
            #expect(abs(s - 1) < 1e-5)
        }
        let dy = Buf(random: rows * cols, rng: &rng), dx = Buf(rows * cols), dxr = Buf(rows * cols)
        Softmax.backward(dx: dx.p, dy: dy.p, y: y.p, rows: rows, cols: cols, scale: scale)
        Reference.softmaxBackward(dx: dxr.p, dy: dy.p, y: yr.p, rows: rows, cols: cols, scale: scale)
        #expect(maxAbsDiff(dx, dxr) < 1e-5)
        let r = GradientCheck.check(analytic: dx.p, input: x.p, indices: 0 ..< x.count, step: fdStep, atol: fdAtol, rtol: fdRtol) {
            Softmax.forward(y.p, x.p, rows: rows, cols: cols, scale: scale)
            return GradientCheck.weightedSum(y.p, dy.p, rows * cols)
        }
        #expect(r.passed, "\(r)")
    }

    @Test func softmaxIsStableForLargeInputs() {
        let x = Buf(16)
        for i in 0 ..< 16 { x.p[i] = 1e4 + Float(i) }
        let y = Buf(16)
        Softmax.forward(y.p, x.p, rows: 1, cols: 16)
        #expect(y.array.allSatisfy { $0.isFinite })
        #expect(y.p[15] > y.p[14] && abs(y.array.reduce(0, +) - 1) < 1e-5)
    }

    @Test func biasAndResidual() {
        var rng = Xoshiro256(seed: 6)
        let rows = 3, cols = 11
        let y0 = Buf(random: rows * cols, rng: &rng), b = Buf(random: cols, rng: &rng)
        let y = y0.copy()
        Bias.forward(y.p, bias: b.p, rows: rows, cols: cols)
        for r in 0 ..< rows { for j in 0 ..< cols { #expect(y.p[r * cols + j] == y0.p[r * cols + j] + b.p[j]) } }
        let dy = Buf(random: rows * cols, rng: &rng), db = Buf(cols)
        Bias.backward(db: db.p, dy: dy.p, rows: rows, cols: cols)
        let r1 = GradientCheck.check(analytic: db.p, input: b.p, indices: 0 ..< cols, step: fdStep, atol: fdAtol, rtol: fdRtol) {
            y.p.update(from: y0.p, count: rows * cols)
            Bias.forward(y.p, bias: b.p, rows: rows, cols: cols)
            return GradientCheck.weightedSum(y.p, dy.p, rows * cols)
        }
        #expect(r1.passed, "\(r1)")

        let a = Buf(random: 19, rng: &rng), c = Buf(random: 19, rng: &rng), s = Buf(19)
        let ds = Buf(random: 19, rng: &rng), da = Buf(19), dc = Buf(19)
        Residual.backward(da: da.p, db: dc.p, dy: ds.p, count: 19)
        for (grad, input) in [(da, a), (dc, c)] {
            let r = GradientCheck.check(analytic: grad.p, input: input.p, indices: 0 ..< 19, step: fdStep, atol: fdAtol, rtol: fdRtol) {
                Residual.forward(s.p, a.p, c.p, count: 19)
                return GradientCheck.weightedSum(s.p, ds.p, 19)
            }
            #expect(r.passed, "\(r)")
        }
    }

    @Test func crossEntropyWithLabelSmoothing() {
        var rng = Xoshiro256(seed: 7)
        let rows = 4, classes = 6, eps: Float = 0.1
        let logits = Buf(random: rows * classes, rng: &rng, scale: 2)
        let labels: [Int32] = [0, 5, 2, 2]
        let probs = Buf(rows * classes), pr = Buf(rows * classes)
        labels.withUnsafeBufferPointer { lab in
            let l = CrossEntropy.forward(probs: probs.p, logits: logits.p, labels: lab.baseAddress!, rows: rows, classes: classes, smoothing: eps)
            let lr = Reference.crossEntropyForward(probs: pr.p, logits: logits.p, labels: lab.baseAddress!, rows: rows, classes: classes, smoothing: eps)
            #expect(abs(l - lr) < 1e-9 * max(1, abs(lr)))
            #expect(maxAbsDiff(probs, pr) < 1e-6)
            let d = Buf(rows * classes)
            CrossEntropy.backward(dlogits: d.p, probs: probs.p, labels: lab.baseAddress!, rows: rows, classes: classes, smoothing: eps, scale: 1)
            let r = GradientCheck.check(analytic: d.p, input: logits.p, indices: 0 ..< logits.count, step: fdStep, atol: fdAtol, rtol: fdRtol) {
                CrossEntropy.forward(probs: probs.p, logits: logits.p, labels: lab.baseAddress!, rows: rows, classes: classes, smoothing: eps)
            }
            #expect(r.passed, "\(r)")
        }
        // With ε = 0 and uniform logits the loss is log C per row.
        let flat = Buf(classes), flatProbs = Buf(classes)
        [Int32(3)].withUnsafeBufferPointer { lab in
            let l = CrossEntropy.forward(probs: flatProbs.p, logits: flat.p, labels: lab.baseAddress!, rows: 1, classes: classes, smoothing: 0)
            #expect(abs(l - Reference.logDouble(Double(classes))) < 1e-12)
        }
    }
}

@Suite("linear and attention")
struct MatrixKernelTests {
    @Test func linear() {
        var rng = Xoshiro256(seed: 8)
        let rows = 6, i = 10, o = 7
        let x = Buf(random: rows * i, rng: &rng), w = Buf(random: o * i, rng: &rng), b = Buf(random: o, rng: &rng)
        let y = Buf(rows * o), yr = Buf(rows * o)
        Linear.forward(y: y.p, x: x.p, weight: w.p, bias: b.p, rows: rows, inFeatures: i, outFeatures: o)
        Reference.linearForward(y: yr.p, x: x.p, weight: w.p, bias: b.p, rows: rows, inFeatures: i, outFeatures: o)
        #expect(maxAbsDiff(y, yr) < 1e-5)
        let res = Buf(random: rows * o, rng: &rng), y2 = Buf(rows * o)
        Linear.forwardResidual(y: y2.p, residual: res.p, x: x.p, weight: w.p, bias: b.p, rows: rows, inFeatures: i, outFeatures: o)
        for j in 0 ..< rows * o { #expect(abs(y2.p[j] - (yr.p[j] + res.p[j])) < 1e-5) }

        let dy = Buf(random: rows * o, rng: &rng)
        let dx = Buf(rows * i), dw = Buf(o * i), db = Buf(o), dxr = Buf(rows * i), dwr = Buf(o * i), dbr = Buf(o)
        Linear.backward(dx: dx.p, dweight: dw.p, dbias: db.p, dy: dy.p, x: x.p, weight: w.p, rows: rows, inFeatures: i, outFeatures: o)
        Reference.linearBackward(dx: dxr.p, dweight: dwr.p, dbias: dbr.p, dy: dy.p, x: x.p, weight: w.p, rows: rows, inFeatures: i, outFeatures: o)
        #expect(maxAbsDiff(dx, dxr) < 1e-4 && maxAbsDiff(dw, dwr) < 1e-4 && maxAbsDiff(db, dbr) < 1e-5)
        let loss = { () -> Double in
            Linear.forward(y: y.p, x: x.p, weight: w.p, bias: b.p, rows: rows, inFeatures: i, outFeatures: o)
            return GradientCheck.weightedSum(y.p, dy.p, rows * o)
        }
        for (grad, input) in [(dx, x), (dw, w), (db, b)] {
            let r = GradientCheck.check(analytic: grad.p, input: input.p, indices: 0 ..< input.count, step: fdStep, atol: fdAtol, rtol: fdRtol, loss: loss)
            #expect(r.passed, "\(r)")
        }
        // Backward accumulates: a second call doubles the gradients.
        let dw1 = dw.copy()
        Linear.backward(dx: nil, dweight: dw.p, dbias: nil, dy: dy.p, x: x.p, weight: w.p, rows: rows, inFeatures: i, outFeatures: o)
        for j in 0 ..< dw.count { #expect(abs(dw.p[j] - 2 * dw1.p[j]) < 1e-4) }
    }

    @Test(arguments: [(2, 5, 2, 4), (1, 9, 3, 8), (2, 17, 1, 3)])
    func attention(batch: Int, tokens n: Int, heads: Int, headDim hd: Int) {
        var rng = Xoshiro256(seed: UInt64(10 + n))
        let d = heads * hd
        let qkv = Buf(random: batch * n * 3 * d, rng: &rng)
        let out = Buf(batch * n * d), outR = Buf(batch * n * d)
        let probs = Buf(batch * heads * n * n), probsR = Buf(batch * heads * n * n)
        Attention.forward(out: out.p, probs: probs.p, qkv: qkv.p, batch: batch, tokens: n, heads: heads, headDim: hd)
        Reference.attentionForward(out: outR.p, probs: probsR.p, qkv: qkv.p, batch: batch, tokens: n, heads: heads, headDim: hd)
        #expect(maxAbsDiff(out, outR) < 1e-5)
        #expect(maxAbsDiff(probs, probsR) < 1e-6)

        let dout = Buf(random: batch * n * d, rng: &rng)
        let dqkv = Buf(batch * n * 3 * d), dqkvR = Buf(batch * n * 3 * d), scratch = Buf(batch * heads * n * n)
        Attention.backward(dqkv: dqkv.p, scratch: scratch.p, dout: dout.p, probs: probs.p, qkv: qkv.p, batch: batch, tokens: n, heads: heads, headDim: hd)
        Reference.attentionBackward(dqkv: dqkvR.p, dout: dout.p, probs: probsR.p, qkv: qkv.p, batch: batch, tokens: n, heads: heads, headDim: hd)
        #expect(maxAbsDiff(dqkv, dqkvR) < 1e-4)
        let r = GradientCheck.check(analytic: dqkv.p, input: qkv.p, indices: 0 ..< qkv.count, step: fdStep, atol: fdAtol, rtol: fdRtol) {
            Attention.forward(out: out.p, probs: probs.p, qkv: qkv.p, batch: batch, tokens: n, heads: heads, headDim: hd)
            return GradientCheck.weightedSum(out.p, dout.p, batch * n * d)
        }
        #expect(r.passed, "\(r)")
    }

    @Test func attentionHeadsAreIndependent() {
        // Changing head 1's q, k, v must leave head 0's output untouched: checks the
        // (which, head, dim) channel order of the fused qkv tensor.
        var rng = Xoshiro256(seed: 30)
        let n = 6, heads = 2, hd = 4, d = heads * hd
        let qkv = Buf(random: n * 3 * d, rng: &rng)
        let out1 = Buf(n * d), out2 = Buf(n * d), probs = Buf(heads * n * n)
        Attention.forward(out: out1.p, probs: probs.p, qkv: qkv.p, batch: 1, tokens: n, heads: heads, headDim: hd)
        for t in 0 ..< n { for which in 0 ..< 3 { for j in 0 ..< hd { qkv.p[t * 3 * d + which * d + hd + j] += 1.5 } } }
        Attention.forward(out: out2.p, probs: probs.p, qkv: qkv.p, batch: 1, tokens: n, heads: heads, headDim: hd)
        for t in 0 ..< n {
            for j in 0 ..< hd { #expect(out1.p[t * d + j] == out2.p[t * d + j]) }
            var changed = false
            for j in hd ..< d where out1.p[t * d + j] != out2.p[t * d + j] { changed = true }
            #expect(changed)
        }
    }
}

@Suite("parallel and random")
struct InfrastructureTests {
    @Test func slicesPartitionExactly() {
        for total in [0, 1, 7, 128, 1001] {
            for parts in 1 ... 5 {
                var seen = [Int](repeating: 0, count: total)
                for i in 0 ..< parts { for j in Parallel.slice(i, of: parts, total: total) { seen[j] += 1 } }
                #expect(seen.allSatisfy { $0 == 1 })
            }
        }
    }

    @Test func forEachRunsEveryIndexOnce() {
        let counts = UnsafeMutablePointer<Int>.allocate(capacity: 64)
        counts.initialize(repeating: 0, count: 64)
        defer { counts.deallocate() }
        Parallel.forEach(64) { counts[$0] += 1 }
        #expect((0 ..< 64).allSatisfy { counts[$0] == 1 })
    }

    @Test func generatorIsDeterministicAndNormal() {
        var a = Xoshiro256(seed: 42), b = Xoshiro256(seed: 42), c = Xoshiro256(seed: 43)
        #expect(a.next() == b.next())
        #expect(a.next() != c.next())
        var rng = Xoshiro256(seed: 9)
        var s = 0.0, s2 = 0.0
        let n = 200_000
        for _ in 0 ..< n { let z = Double(rng.nextNormal()); s += z; s2 += z * z }
        #expect(abs(s / Double(n)) < 0.01)
        #expect(abs(s2 / Double(n) - 1) < 0.02)
        var t = Xoshiro256(seed: 10)
        for _ in 0 ..< 10_000 { #expect(abs(t.nextTruncatedNormal(std: 0.02)) <= 0.04) }
    }
}
