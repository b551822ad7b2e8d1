/// A linear layer whose weight is mostly zero (an unstructured mask), computed on its
/// active entries only, as SparseProp does on CPUs: the activations are transposed so the
/// vectorised dimension is the rows of the batch (R), and each active weight becomes an
/// AXPY over a block of R — contiguous loads, no gathers.
///
///   forward        yᵀ: (O, R) = W: (O, I) · xᵀ: (I, R)         W by output rows (CSR)
///   input grad     dxᵀ: (I, R) = Wᵀ · dyᵀ: (O, R)              W by input columns (CSC)
///   weight grad    dW[o, k] = dyᵀ[o, :] · xᵀ[k, :]  only where the mask is on (SDDMM)
///
/// The structure is built from the mask when the mask changes; the values are gathered
/// from the dense weight (which stays the optimizer's) before each use, O(active).
public struct SparseWeight: Sendable {
    public let outFeatures: Int
    public let inFeatures: Int
    /// CSR: the active entries of output row o are rowStart[o] ..< rowStart[o + 1], at
    /// input column column[e], dense index o·I + column[e].
    public let rowStart: [Int32]
    public let column: [Int32]
    /// CSC: the active entries of input column k are columnStart[k] ..< columnStart[k + 1],
    /// at output row row[e]; csrIndex[e] is the same entry's place in the CSR order.
    public let columnStart: [Int32]
    public let row: [Int32]
    public let csrIndex: [Int32]
    /// The active values in CSR and in CSC order (`gather` fills both).
    public var values: [Float]
    public var valuesByColumn: [Float]

    public var activeCount: Int { column.count }
    /// What the two layouts hold.
    public var bytes: Int {
        4 * (rowStart.count + column.count + columnStart.count + row.count + csrIndex.count + values.count + valuesByColumn.count)
    }
    public var density: Double { Double(activeCount) / Double(max(1, outFeatures * inFeatures)) }

    /// The structure of `mask` (O, I), nonzero = active; values left at zero.
    public init(mask: UnsafePointer<Float>, outFeatures o: Int, inFeatures i: Int) {
        outFeatures = o; inFeatures = i
        var rowStart = [Int32](repeating: 0, count: o + 1)
        var column: [Int32] = []
        var perColumn = [Int32](repeating: 0, count: i + 1)
        for r in 0 ..< o {
            for k in 0 ..< i where mask[r * i + k] != 0 {
                column.append(Int32(k))
                perColumn[k + 1] += 1
            }
            rowStart[r + 1] = Int32(column.count)
        }
        for k in 0 ..< i { perColumn[k + 1] += perColumn[k] }
        var next = perColumn
        var row = [Int32](repeating: 0, count: column.count)
        var csrIndex = [Int32](repeating: 0, count: column.count)
        for r in 0 ..< o {
            for e in Int(rowStart[r]) ..< Int(rowStart[r + 1]) {
                let k = Int(column[e]), slot = Int(next[k])
                row[slot] = Int32(r)
                csrIndex[slot] = Int32(e)
                next[k] += 1
            }
        }
        self.rowStart = rowStart; self.column = column
        columnStart = perColumn; self.row = row; self.csrIndex = csrIndex
        values = [Float](repeating: 0, count: column.count)
        valuesByColumn = values
    }

    /// One layout as pointers: the entries of line l are start[l] ..< start[l + 1], at
    /// index[e] across, with values[e].
    public struct Lines {
        public let start: UnsafePointer<Int32>
        public let index: UnsafePointer<Int32>
        public let values: UnsafePointer<Float>
    }

    /// The layout by output rows (CSR) and by input columns (CSC), valid during `body`.
    public func withLines<T>(_ body: (_ byRow: Lines, _ byColumn: Lines) -> T) -> T {
        // An empty array may have no storage; no entry is read then, but a pointer is needed.
        func base<E>(_ p: UnsafeBufferPointer<E>) -> UnsafePointer<E> { p.baseAddress ?? UnsafePointer(bitPattern: MemoryLayout<E>.alignment)! }
        return rowStart.withUnsafeBufferPointer { rs in
            column.withUnsafeBufferPointer { col in
                values.withUnsafeBufferPointer { v in
                    columnStart.withUnsafeBufferPointer { cs in
                        row.withUnsafeBufferPointer { r in
                            valuesByColumn.withUnsafeBufferPointer { vc in
                                body(Lines(start: base(rs), index: base(col), values: base(v)),
                                     Lines(start: base(cs), index: base(r), values: base(vc)))
                            }
                        }
                    }
                }
            }
        }
    }

    /// Takes the active values from the dense weight w: (O, I).
    public mutating func gather(from w: UnsafePointer<Float>) {
        let i = inFeatures
        rowStart.withUnsafeBufferPointer { rs in
            column.withUnsafeBufferPointer { col in
                values.withUnsafeMutableBufferPointer { v in
                    for r in 0 ..< outFeatures {
                        let base = w + r * i
                        for e in Int(rs[r]) ..< Int(rs[r + 1]) { v[e] = base[Int(col[e])] }
                    }
                }
            }
        }
        let v = values
        csrIndex.withUnsafeBufferPointer { map in
            valuesByColumn.withUnsafeMutableBufferPointer { out in
                for e in 0 ..< map.count { out[e] = v[Int(map[e])] }
            }
        }
    }
}

public enum SparseLinear {
    /// Rows of the batch one thread computes at a time: eight 8-wide accumulators.
    @usableFromInline static let block = 64

    /// yᵀ: (O, R) ← W·xᵀ, xᵀ: (I, R), over the CSR structure (no bias: it is added after
    /// the transpose back). Threads split R in blocks, so they write disjoint columns.
    public static func forward(yT: UnsafeMutablePointer<Float>, xT: UnsafePointer<Float>, weight w: SparseWeight,
                               rows r: Int, threads: Int = 1) {
        w.withLines { byRow, _ in
            product(out: yT, input: xT, outputs: w.outFeatures, start: byRow.start, index: byRow.index, values: byRow.values,
                    rows: r, threads: threads)
        }
    }

    /// dxᵀ: (I, R) ← Wᵀ·dyᵀ (overwritten), dyᵀ: (O, R), over the CSC structure.
    public static func backwardInput(dxT: UnsafeMutablePointer<Float>, dyT: UnsafePointer<Float>, weight w: SparseWeight,
                                     rows r: Int, threads: Int = 1) {
        w.withLines { _, byColumn in
            product(out: dxT, input: dyT, outputs: w.inFeatures, start: byColumn.start, index: byColumn.index, values: byColumn.values,
                    rows: r, threads: threads)
        }
    }

    /// dvalues[e] += dyᵀ[o, :]·xᵀ[k, :] for each active entry e = (o, k), in CSR order.
    /// Threads split the output rows, so they write disjoint entries.
    public static func backwardWeight(dvalues: UnsafeMutablePointer<Float>, dyT: UnsafePointer<Float>, xT: UnsafePointer<Float>,
                                      weight w: SparseWeight, rows r: Int, threads: Int = 1) {
        // R in chunks whose rows of xᵀ (I of them) stay in the L2 cache across output rows.
        let chunk = max(block, min(r, (1 << 19) / max(1, 4 * w.inFeatures)) / block * block)
        w.withLines { byRow, _ in
            let s = byRow.start, col = byRow.index
            Parallel.forRanges(total: w.outFeatures, threads: threads, grain: 8) { outputs in
                var lo = 0
                while lo < r {
                    let n = min(chunk, r - lo)
                    for o in outputs {
                        let dy = dyT + o * r + lo
                        for e in Int(s[o]) ..< Int(s[o + 1]) {
                            dvalues[e] += VectorOps.dot(dy, xT + Int(col[e]) * r + lo, n)
                        }
                    }
                    lo += n
                }
            }
        }
    }

    /// out[o, :] = Σ_e values[e]·input[index[e], :] over e in start[o] ..< start[o + 1].
    @inlinable
    static func product(out: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, outputs: Int,
                        start: UnsafePointer<Int32>, index: UnsafePointer<Int32>, values: UnsafePointer<Float>,
                        rows r: Int, threads: Int) {
        let blocks = (r + block - 1) / block
        Parallel.forRanges(total: blocks, threads: threads, grain: 1) { range in
            for b in range {
                let lo = b * block
                blockProduct(out: out + lo, outStride: r, input: input + lo, inStride: r, width: min(block, r - lo),
                             outputs: outputs, start: start, index: index, values: values)
            }
        }
    }

    /// One block of at most 64 columns: out[o, 0..<width] = Σ_e values[e]·input[index[e], 0..<width],
    /// rows `outStride` and `inStride` apart.
    @inlinable
    static func blockProduct(out: UnsafeMutablePointer<Float>, outStride: Int, input: UnsafePointer<Float>, inStride: Int, width n: Int,
                             outputs: Int, start: UnsafePointer<Int32>, index: UnsafePointer<Int32>, values: UnsafePointer<Float>) {
        if n == block {
            for o in 0 ..< outputs {
                var a0 = Vec8(), a1 = Vec8(), a2 = Vec8(), a3 = Vec8(), a4 = Vec8(), a5 = Vec8(), a6 = Vec8(), a7 = Vec8()
                for e in Int(start[o]) ..< Int(start[o + 1]) {
                    let w = Vec8(repeating: values[e])
                    let x = input + Int(index[e]) * inStride
                    a0 += w * x.loadVec8(0); a1 += w * x.loadVec8(8); a2 += w * x.loadVec8(16); a3 += w * x.loadVec8(24)
                    a4 += w * x.loadVec8(32); a5 += w * x.loadVec8(40); a6 += w * x.loadVec8(48); a7 += w * x.loadVec8(56)
                }
                let y = out + o * outStride
                y.storeVec8(a0, 0); y.storeVec8(a1, 8); y.storeVec8(a2, 16); y.storeVec8(a3, 24)
                y.storeVec8(a4, 32); y.storeVec8(a5, 40); y.storeVec8(a6, 48); y.storeVec8(a7, 56)
            }
        } else {
            for o in 0 ..< outputs {
                let y = out + o * outStride
                for j in 0 ..< n { y[j] = 0 }
                for e in Int(start[o]) ..< Int(start[o + 1]) {
                    let w = values[e], x = input + Int(index[e]) * inStride
                    for j in 0 ..< n { y[j] += w * x[j] }
                }
            }
        }
    }


    /// dst: (C, R) ← src: (R, C), in 64-row strips split over threads.
    public static func transpose(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, rows r: Int, cols c: Int,
                                 threads: Int = 1) {
        let strips = (r + 63) / 64
        Parallel.forRanges(total: strips, threads: threads, grain: 2) { range in
            for strip in range {
                let r0 = strip * 64
                transposeBlock(dst + r0, dstStride: r, src + r0 * c, srcStride: c, rows: min(64, r - r0), cols: c)
            }
        }
    }

    /// dst[j·dstStride + i] = src[i·srcStride + j] for i < rows, j < cols (`+=` when
    /// `accumulate`): 8×8 tiles, each read as eight rows of 8, transposed in registers and
    /// written as eight rows of 8.
    @inlinable
    static func transposeBlock(_ dst: UnsafeMutablePointer<Float>, dstStride: Int, _ src: UnsafePointer<Float>, srcStride: Int,
                               rows: Int, cols c: Int, accumulate: Bool = false) {
        @inline(__always) func put(_ d: UnsafeMutablePointer<Float>, _ v: Vec8, _ at: Int) {
            d.storeVec8(accumulate ? d.loadVec8(at) + v : v, at)
        }
        @inline(__always) func put(_ k: Int, _ v: Float) { dst[k] = accumulate ? dst[k] + v : v }
        var i = 0
        while i + 8 <= rows {
            var j = 0
            while j + 8 <= c {
                let s = src + i * srcStride + j, ld = srcStride
                let t = transpose8(s.loadVec8(0), s.loadVec8(ld), s.loadVec8(2 * ld), s.loadVec8(3 * ld),
                                   s.loadVec8(4 * ld), s.loadVec8(5 * ld), s.loadVec8(6 * ld), s.loadVec8(7 * ld))
                let d = dst + j * dstStride + i, ds = dstStride
                put(d, t.0, 0); put(d, t.1, ds); put(d, t.2, 2 * ds); put(d, t.3, 3 * ds)
                put(d, t.4, 4 * ds); put(d, t.5, 5 * ds); put(d, t.6, 6 * ds); put(d, t.7, 7 * ds)
                j += 8
            }
            for jj in j ..< c { for ii in i ..< i + 8 { put(jj * dstStride + ii, src[ii * srcStride + jj]) } }
            i += 8
        }
        for ii in i ..< rows { for jj in 0 ..< c { put(jj * dstStride + ii, src[ii * srcStride + jj]) } }
    }

    /// The transpose of the 8×8 matrix whose rows are r0 … r7: three perfect unshuffles of
    /// its 64 entries (each moves the index's bits one place round, and row and column are
    /// three bits each), eight two-vector shuffles apiece.
    @inlinable @inline(__always)
    static func transpose8(_ r0: Vec8, _ r1: Vec8, _ r2: Vec8, _ r3: Vec8, _ r4: Vec8, _ r5: Vec8, _ r6: Vec8, _ r7: Vec8)
        -> (Vec8, Vec8, Vec8, Vec8, Vec8, Vec8, Vec8, Vec8) {
        @inline(__always) func unshuffle(_ v: (Vec8, Vec8, Vec8, Vec8, Vec8, Vec8, Vec8, Vec8)) -> (Vec8, Vec8, Vec8, Vec8, Vec8, Vec8, Vec8, Vec8) {
            let p0 = SIMD16(lowHalf: v.0, highHalf: v.1), p1 = SIMD16(lowHalf: v.2, highHalf: v.3)
            let p2 = SIMD16(lowHalf: v.4, highHalf: v.5), p3 = SIMD16(lowHalf: v.6, highHalf: v.7)
            return (p0.evenHalf, p1.evenHalf, p2.evenHalf, p3.evenHalf, p0.oddHalf, p1.oddHalf, p2.oddHalf, p3.oddHalf)
        }
        return unshuffle(unshuffle(unshuffle((r0, r1, r2, r3, r4, r5, r6, r7))))
    }
}
