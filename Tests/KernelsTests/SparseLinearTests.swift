import Core
import Testing
@testable import Kernels

/// The sparse linear layer against its naive twin (the masked dense layer, in plain loops)
/// and central differences: same outputs and gradients on the active entries, whatever the
/// density, the batch's remainder to a block, and the thread count.
@Suite("sparse linear: active entries only")
struct SparseLinearTests {
    struct Case {
        let r: Int, i: Int, o: Int
        let x: Buf, w: Buf, mask: Buf
        var sparse: SparseWeight

        init(rows r: Int, inFeatures i: Int, outFeatures o: Int, density: Float, seed: UInt64) {
            self.r = r; self.i = i; self.o = o
            var rng = Xoshiro256(seed: seed)
            x = Buf(random: r * i, rng: &rng)
            w = Buf(random: o * i, rng: &rng, scale: 0.5)
            mask = Buf(o * i)
            for e in 0 ..< o * i { mask.p[e] = rng.nextUniform() < density ? 1 : 0 }
            for e in 0 ..< o * i where mask.p[e] == 0 { w.p[e] = 0 }
            sparse = SparseWeight(mask: mask.p, outFeatures: o, inFeatures: i)
            sparse.gather(from: w.p)
        }

        /// y: (R, O) through the sparse path: transpose, product, transpose back.
        func forward(threads: Int = 1) -> Buf {
            let xT = Buf(i * r), yT = Buf(o * r), y = Buf(r * o)
            SparseLinear.transpose(xT.p, x.p, rows: r, cols: i, threads: threads)
            SparseLinear.forward(yT: yT.p, xT: xT.p, weight: sparse, rows: r, threads: threads)
            SparseLinear.transpose(y.p, yT.p, rows: o, cols: r, threads: threads)
            return y
        }

        /// dx: (R, I) and the active entries' dW, dense (O, I) with zeros elsewhere.
        func backward(dy: Buf, threads: Int = 1) -> (dx: Buf, dw: Buf) {
            let xT = Buf(i * r), dyT = Buf(o * r), dxT = Buf(i * r), dx = Buf(r * i)
            SparseLinear.transpose(xT.p, x.p, rows: r, cols: i)
            SparseLinear.transpose(dyT.p, dy.p, rows: r, cols: o)
            SparseLinear.backwardInput(dxT: dxT.p, dyT: dyT.p, weight: sparse, rows: r, threads: threads)
            SparseLinear.transpose(dx.p, dxT.p, rows: i, cols: r)
            let dvalues = Buf(sparse.activeCount)
            SparseLinear.backwardWeight(dvalues: dvalues.p, dyT: dyT.p, xT: xT.p, weight: sparse, rows: r, threads: threads)
            let dw = Buf(o * i)
            for row in 0 ..< o {
                for e in Int(sparse.rowStart[row]) ..< Int(sparse.rowStart[row + 1]) { dw.p[row * i + Int(sparse.column[e])] = dvalues.p[e] }
            }
            return (dx, dw)
        }
    }

    /// The naive twin: the masked dense layer in plain loops, in Double.
    static func naive(_ c: Case, dy: Buf) -> (y: Buf, dx: Buf, dw: Buf) {
        let y = Buf(c.r * c.o), dx = Buf(c.r * c.i), dw = Buf(c.o * c.i)
        for n in 0 ..< c.r {
            for o in 0 ..< c.o {
                var s = 0.0
                for k in 0 ..< c.i { s += Double(c.x.p[n * c.i + k]) * Double(c.w.p[o * c.i + k]) }
                y.p[n * c.o + o] = Float(s)
            }
            for k in 0 ..< c.i {
                var s = 0.0
                for o in 0 ..< c.o { s += Double(dy.p[n * c.o + o]) * Double(c.w.p[o * c.i + k]) }
                dx.p[n * c.i + k] = Float(s)
            }
        }
        for o in 0 ..< c.o {
            for k in 0 ..< c.i where c.mask.p[o * c.i + k] != 0 {
                var s = 0.0
                for n in 0 ..< c.r { s += Double(dy.p[n * c.o + o]) * Double(c.x.p[n * c.i + k]) }
                dw.p[o * c.i + k] = Float(s)
            }
        }
        return (y, dx, dw)
    }

    /// Largest |a − b| relative to the largest |b|.
    func relative(_ a: Buf, _ b: Buf) -> Float { maxAbsDiff(a, b) / max(maxAbs(b), 1e-30) }

    /// Both layouts hold every active entry once, in order, with the dense weight's values.
    @Test func layoutsHoldEachActiveEntryOnce() {
        let c = Case(rows: 3, inFeatures: 17, outFeatures: 13, density: 0.3, seed: 1)
        let active = (0 ..< 13 * 17).filter { c.mask.p[$0] != 0 }
        #expect(c.sparse.activeCount == active.count && c.sparse.rowStart.last.map(Int.init) == active.count)
        var fromCSR: [Int] = []
        for o in 0 ..< 13 { for e in Int(c.sparse.rowStart[o]) ..< Int(c.sparse.rowStart[o + 1]) { fromCSR.append(o * 17 + Int(c.sparse.column[e])) } }
        #expect(fromCSR == active)
        var fromCSC: [Int] = []
        for k in 0 ..< 17 {
            for e in Int(c.sparse.columnStart[k]) ..< Int(c.sparse.columnStart[k + 1]) {
                let index = Int(c.sparse.row[e]) * 17 + k
                fromCSC.append(index)
                #expect(c.sparse.valuesByColumn[e] == c.w.p[index] && c.sparse.values[Int(c.sparse.csrIndex[e])] == c.w.p[index])
            }
        }
        #expect(fromCSC.sorted() == active)
        #expect(zip(fromCSR, c.sparse.values).allSatisfy { c.w.p[$0] == $1 })
    }

    /// Outputs and gradients equal the naive masked layer's to fp32 rounding, and the
    /// inactive entries of dW are exactly zero; rows a multiple of the block and not,
    /// densities from 5% to 100% (and an all-zero mask), one and three threads alike.
    @Test(arguments: [(128, 0.1), (150, 0.05), (64, 0.5), (37, 1.0), (200, 0.0)])
    func matchesTheNaiveMaskedLayer(rows: Int, density: Float) {
        let c = Case(rows: rows, inFeatures: 24, outFeatures: 40, density: density, seed: UInt64(rows))
        var rng = Xoshiro256(seed: 99)
        let dy = Buf(random: rows * 40, rng: &rng)
        let ref = Self.naive(c, dy: dy)
        for threads in [1, 3] {
            let y = c.forward(threads: threads)
            let (dx, dw) = c.backward(dy: dy, threads: threads)
            #expect(relative(y, ref.y) < 1e-5 && relative(dx, ref.dx) < 1e-5, "threads \(threads): y \(relative(y, ref.y)), dx \(relative(dx, ref.dx))")
            #expect(density == 0 ? maxAbs(dw) == 0 : relative(dw, ref.dw) < 1e-5, "threads \(threads): dW \(relative(dw, ref.dw))")
            #expect((0 ..< 40 * 24).allSatisfy { c.mask.p[$0] != 0 || dw.p[$0] == 0 }, "dW nonzero off the mask")
        }
    }

    /// Central differences of L = Σ g ⊙ y through the sparse forward agree with the
    /// backward's dx and the active entries of dW.
    @Test func gradientsMatchCentralDifferences() {
        var c = Case(rows: 70, inFeatures: 12, outFeatures: 20, density: 0.3, seed: 5)
        var rng = Xoshiro256(seed: 6)
        let g = Buf(random: 70 * 20, rng: &rng)
        let (dx, dw) = c.backward(dy: g)
        func loss(_ c: Case) -> Double {
            let y = c.forward()
            return withExtendedLifetime(y) { GradientCheck.weightedSum(y.p, g.p, 70 * 20) }
        }
        let current = c
        let rx = GradientCheck.check(analytic: dx.p, input: c.x.p, indices: stride(from: 0, to: 70 * 12, by: 7), step: 1e-2,
                                     atol: 2e-3, rtol: 1e-3) { loss(current) }
        #expect(rx.passed, "dx: \(rx)")
        let active = (0 ..< 20 * 12).filter { c.mask.p[$0] != 0 }
        var report = GradientCheck.Report()
        for e in active {
            let numeric = GradientCheck.centralDifference(at: e, of: c.w.p, step: 1e-2) {
                c.sparse.gather(from: c.w.p)
                return loss(c)
            }
            report.add(index: e, analytic: Double(dw.p[e]), numeric: numeric, atol: 2e-3, rtol: 1e-3)
        }
        #expect(report.passed, "dW: \(report)")
    }
}

extension SparseLinearTests {
    /// The row-major form (block transposes in cache, dx and dW in one pass) gives what the
    /// whole-matrix form and the naive masked layer give, with the bias and its gradient,
    /// over rows that span several backward blocks and a remainder; dx accumulates.
    @Test(arguments: [(300, 0.1), (600, 0.3), (37, 1.0), (64, 0.0)])
    func rowMajorFormMatchesTheNaiveLayer(rows: Int, density: Float) {
        let c = Case(rows: rows, inFeatures: 24, outFeatures: 40, density: density, seed: UInt64(rows) + 7)
        var rng = Xoshiro256(seed: 3)
        let dy = Buf(random: rows * 40, rng: &rng), bias = Buf(random: 40, rng: &rng)
        let ref = Self.naive(c, dy: dy)
        for n in 0 ..< rows { for o in 0 ..< 40 { ref.y.p[n * 40 + o] += bias.p[o] } }
        let dbRef = Buf(40)
        for n in 0 ..< rows { for o in 0 ..< 40 { dbRef.p[o] += dy.p[n * 40 + o] } }
        for threads in [1, 3] {
            let y = Buf(rows * 40)
            SparseLinear.forwardRows(y: y.p, x: c.x.p, bias: bias.p, weight: c.sparse, rows: rows, threads: threads)
            let dx = Buf(rows * 24), db = Buf(40), dvalues = Buf(c.sparse.activeCount)
            for e in 0 ..< dx.count { dx.p[e] = 1 }  // dx accumulates onto what is there
            SparseLinear.backwardRows(dx: dx.p, dvalues: dvalues.p, dbias: db.p, dy: dy.p, x: c.x.p, weight: c.sparse, rows: rows, threads: threads)
            for e in 0 ..< dx.count { dx.p[e] -= 1 }
            let dw = Buf(40 * 24)
            for o in 0 ..< 40 {
                for e in Int(c.sparse.rowStart[o]) ..< Int(c.sparse.rowStart[o + 1]) { dw.p[o * 24 + Int(c.sparse.column[e])] = dvalues.p[e] }
            }
            #expect(relative(y, ref.y) < 1e-5, "threads \(threads): y \(relative(y, ref.y))")
            #expect(density == 0 ? maxAbs(dx) < 1e-6 : relative(dx, ref.dx) < 1e-5, "threads \(threads): dx \(relative(dx, ref.dx))")
            #expect(density == 0 ? maxAbs(dw) == 0 : relative(dw, ref.dw) < 1e-5, "threads \(threads): dW \(relative(dw, ref.dw))")
            #expect(relative(db, dbRef) < 1e-5, "threads \(threads): dbias \(relative(db, dbRef))")
        }
    }
}
