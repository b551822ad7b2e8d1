/// The sparse linear layer on row-major activations, as the model holds them: each block of
/// rows is transposed into a buffer that stays in cache, computed there, and transposed
/// back, so no whole activation is transposed through memory (the transposes of the
/// whole-matrix form cost as much as the products).
extension SparseLinear {
    /// Rows of a backward block: dW's dot products run over this many rows at a time.
    @usableFromInline static let backwardBlock = 256

    /// y: (R, O) ← [residual: (R, O) +] x: (R, I)·Wᵀ + b over the active entries. Threads
    /// split the rows.
    public static func forwardRows(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                   residual: UnsafePointer<Float>? = nil, weight w: SparseWeight, rows r: Int, threads: Int = 1) {
        let i = w.inFeatures, o = w.outFeatures
        let blocks = (r + block - 1) / block
        w.withLines { byRow, _ in
            let s = byRow.start, ix = byRow.index, vals = byRow.values
            Parallel.forRanges(total: blocks, threads: threads, grain: 1) { range in
                let xT = UnsafeMutablePointer<Float>.allocate(capacity: i * block)
                let yT = UnsafeMutablePointer<Float>.allocate(capacity: o * block)
                defer { xT.deallocate(); yT.deallocate() }
                for b in range {
                    let lo = b * block, n = min(block, r - lo)
                    transposeBlock(xT, dstStride: block, x + lo * i, srcStride: i, rows: n, cols: i)
                    blockProduct(out: yT, outStride: block, input: xT, inStride: block, width: n,
                                 outputs: o, start: s, index: ix, values: vals)
                    let out = y + lo * o
                    transposeBlock(out, dstStride: o, yT, srcStride: block, rows: o, cols: n)
                    for row in 0 ..< n {
                        let yr = out + row * o
                        if let residual { VectorOps.accumulate(yr, residual + (lo + row) * o, o) }
                        if let bias { VectorOps.accumulate(yr, bias, o) }
                    }
                }
            }
        }
    }

    /// dx: (R, I) += dy·W, dvalues += dW at the active entries in CSR order, dbias += Σ dy,
    /// each skipped when nil, from dy: (R, O) and x: (R, I). Threads split the rows; each
    /// sums its own dW and dbias, added at the end in thread order.
    public static func backwardRows(dx: UnsafeMutablePointer<Float>?, dvalues: UnsafeMutablePointer<Float>?,
                                    dbias: UnsafeMutablePointer<Float>?, dy: UnsafePointer<Float>, x: UnsafePointer<Float>,
                                    weight w: SparseWeight, rows r: Int, threads: Int = 1) {
        let i = w.inFeatures, o = w.outFeatures, nnz = w.activeCount, bb = backwardBlock
        let blocks = (r + bb - 1) / bb
        let parts = max(1, min(threads, blocks))
        // Per thread: its dW and dbias sums (thread 0 writes straight into the outputs).
        let sums = dvalues != nil || dbias != nil
        let partials = parts > 1 && sums ? UnsafeMutablePointer<Float>.allocate(capacity: (parts - 1) * (nnz + o)) : nil
        partials?.initialize(repeating: 0, count: (parts - 1) * (nnz + o))
        defer { partials?.deallocate() }
        w.withLines { byRow, byCol in
            let rowStart = byRow.start, column = byRow.index
            let columnStart = byCol.start, row = byCol.index, byColumn = byCol.values
            Parallel.forEach(parts) { part in
                let own = part == 0 ? nil : partials.map { $0 + (part - 1) * (nnz + o) }
                let dv = part == 0 ? dvalues : (dvalues == nil ? nil : own)
                let db = part == 0 ? dbias : (dbias == nil ? nil : own.map { $0 + nnz })
                let xT = UnsafeMutablePointer<Float>.allocate(capacity: i * bb)
                let dyT = UnsafeMutablePointer<Float>.allocate(capacity: o * bb)
                let dxT = UnsafeMutablePointer<Float>.allocate(capacity: i * block)
                defer { xT.deallocate(); dyT.deallocate(); dxT.deallocate() }
                for b in Parallel.slice(part, of: parts, total: blocks) {
                    let lo = b * bb, n = min(bb, r - lo)
                    if dv != nil { transposeBlock(xT, dstStride: bb, x + lo * i, srcStride: i, rows: n, cols: i) }
                    transposeBlock(dyT, dstStride: bb, dy + lo * o, srcStride: o, rows: n, cols: o)
                    for oo in 0 ..< o where sums {
                        let g = dyT + oo * bb
                        if let db { db[oo] += VectorOps.sum(g, n) }
                        guard let dv else { continue }
                        var e = Int(rowStart[oo])
                        let end = Int(rowStart[oo + 1])
                        // Four entries at a time share the loads of dy's row.
                        while e + 4 <= end {
                            let d = dot4(g, xT + Int(column[e]) * bb, xT + Int(column[e + 1]) * bb,
                                         xT + Int(column[e + 2]) * bb, xT + Int(column[e + 3]) * bb, n)
                            dv[e] += d.0; dv[e + 1] += d.1; dv[e + 2] += d.2; dv[e + 3] += d.3
                            e += 4
                        }
                        while e < end {
                            dv[e] += VectorOps.dot(g, xT + Int(column[e]) * bb, n)
                            e += 1
                        }
                    }
                    guard let dx else { continue }
                    var sub = 0
                    while sub < n {
                        let m = min(block, n - sub)
                        blockProduct(out: dxT, outStride: block, input: dyT + sub, inStride: bb, width: m,
                                     outputs: i, start: columnStart, index: row, values: byColumn)
                        // dx rows (lo + sub …) += the block's columns
                        transposeBlock(dx + (lo + sub) * i, dstStride: i, dxT, srcStride: block, rows: i, cols: m, accumulate: true)
                        sub += m
                    }
                }
            }
        }
        guard let partials else { return }
        for p in 0 ..< parts - 1 {
            let dv = partials + p * (nnz + o)
            if let dvalues { for e in 0 ..< nnz { dvalues[e] += dv[e] } }
            if let dbias { for k in 0 ..< o { dbias[k] += dv[nnz + k] } }
        }
    }

    /// (g·a, g·b, g·c, g·d) over n entries.
    @inlinable
    static func dot4(_ g: UnsafePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafePointer<Float>,
                     _ d: UnsafePointer<Float>, _ n: Int) -> (Float, Float, Float, Float) {
        var sa = Vec8(), sb = Vec8(), sc = Vec8(), sd = Vec8()
        var j = 0
        while j + 8 <= n {
            let v = g.loadVec8(j)
            sa += v * a.loadVec8(j); sb += v * b.loadVec8(j); sc += v * c.loadVec8(j); sd += v * d.loadVec8(j)
            j += 8
        }
        var ra = sa.sum(), rb = sb.sum(), rc = sc.sum(), rd = sd.sum()
        while j < n { ra += g[j] * a[j]; rb += g[j] * b[j]; rc += g[j] * c[j]; rd += g[j] * d[j]; j += 1 }
        return (ra, rb, rc, rd)
    }
}
