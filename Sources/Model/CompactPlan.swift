/// A structurally pruned view of a full model: the compact model that keeps only some
/// heads and MLP neurons of each block, and the copy runs that move parameters between
/// the full layout and the compact one. A step gathers the full parameters into the
/// compact buffer, runs forward and backward on the smaller shapes (sgemm on fewer rows
/// and columns, attention only for kept heads), and scatters the gradient back.
///
/// Which floats make up a unit is `UnitSlices`.
public final class CompactPlan: Sendable {
    public let full: ViTModel
    public let compact: ViTModel
    /// Kept head and neuron indices per block, ascending.
    public let keptHeads: [[Int]]
    public let keptNeurons: [[Int]]
    /// (full offset, compact offset, count), merged where both sides are contiguous.
    let runs: [Run]

    struct Run: Sendable, Equatable {
        var full: Int, compact: Int, count: Int
    }

    public init(full: ViTModel, keptHeads: [[Int]], keptNeurons: [[Int]]) {
        let c = full.config
        precondition(!c.isCompact, "CompactPlan: the full model must not itself be compact")
        precondition(keptHeads.count == c.depth && keptNeurons.count == c.depth, "CompactPlan: one list per block")
        for l in 0 ..< c.depth {
            precondition(!keptHeads[l].isEmpty && !keptNeurons[l].isEmpty, "CompactPlan: block \(l) keeps no head or no neuron")
            precondition(keptHeads[l] == keptHeads[l].sorted() && Set(keptHeads[l]).count == keptHeads[l].count
                && keptHeads[l].allSatisfy { (0 ..< c.heads).contains($0) }, "CompactPlan: bad head list \(keptHeads[l])")
            precondition(keptNeurons[l] == keptNeurons[l].sorted() && Set(keptNeurons[l]).count == keptNeurons[l].count
                && keptNeurons[l].allSatisfy { (0 ..< c.hidden).contains($0) }, "CompactPlan: bad neuron list in block \(l)")
        }
        self.full = full
        self.keptHeads = keptHeads
        self.keptNeurons = keptNeurons
        compact = ViTModel(config: c.compacted(heads: keptHeads.map(\.count), hidden: keptNeurons.map(\.count)))

        var runs: [Run] = []
        func add(_ f: Int, _ k: Int, _ n: Int) {
            if let last = runs.last, last.full + last.count == f, last.compact + last.count == k {
                runs[runs.count - 1].count += n
            } else {
                runs.append(Run(full: f, compact: k, count: n))
            }
        }
        let compactLayout = compact.layout
        for t in full.layout.tensors {
            let ct = compactLayout.spec(t.name)
            let (f, k) = (t.offset, ct.offset)
            guard t.name.hasPrefix("blocks."), let l = Int(t.name.split(separator: ".")[1]),
                  let slices = UnitSlices.of(t.name.dropFirst("blocks.\(l).".count), config: c) else {
                add(f, k, t.count); continue
            }
            let kept = slices.kind == .head ? keptHeads[l] : keptNeurons[l]
            for o in 0 ..< slices.outer {
                for (p, unit) in kept.enumerated() {
                    add(f + slices.offset(outer: o, unit: unit), k + slices.compactOffset(outer: o, position: p, kept: kept.count), slices.inner)
                }
            }
        }
        self.runs = runs
    }

    /// compact ← the kept parameters of `full` (full layout).
    public func gather(_ fullValues: UnsafePointer<Float>, into compactValues: UnsafeMutablePointer<Float>) {
        for r in runs { (compactValues + r.compact).update(from: fullValues + r.full, count: r.count) }
    }

    /// full (full layout) ← compact at the kept positions; every other position is set to
    /// zero, so a pruned unit's gradient is exactly zero.
    public func scatter(_ compactValues: UnsafePointer<Float>, into fullValues: UnsafeMutablePointer<Float>) {
        fullValues.update(repeating: 0, count: full.layout.count)
        for r in runs { (fullValues + r.full).update(from: compactValues + r.compact, count: r.count) }
    }

    /// Whether this plan is for exactly these kept heads and neurons.
    public func keeps(_ heads: [[Int]], _ neurons: [[Int]]) -> Bool { keptHeads == heads && keptNeurons == neurons }

    /// Copy runs (a measure of gather/scatter cost).
    public var runCount: Int { runs.count }
}
