import Core
import Kernels
import Model

/// The per-unit scores workers compute at S2ViTE update steps (and at SSP's pruning
/// step), as means over the step's images.
public struct UnitScores: Sendable, Equatable {
    /// (depth, heads): Σ A·∂L/∂A over the head's attention output, signed (the absolute
    /// value is taken after summing over workers).
    public var headTaylor: [Float]
    /// (depth, heads): ‖∂L/∂θ‖₁ over the head's parameters, inactive heads holding their
    /// candidate weights (`UnitCandidates`).
    public var headGrow: [Float]
    /// (depth, hidden): ‖∂L/∂θ‖₁ over the neuron's parameters, likewise.
    public var neuronGrow: [Float]

    public init(config c: ViTConfig) {
        headTaylor = [Float](repeating: 0, count: c.depth * c.heads)
        headGrow = headTaylor
        neuronGrow = [Float](repeating: 0, count: c.depth * c.hidden)
    }

    /// How many floats travel: 2·depth·heads + depth·hidden.
    public static func count(config c: ViTConfig) -> Int { c.depth * (2 * c.heads + c.hidden) }

    public var flat: [Float] { headTaylor + headGrow + neuronGrow }

    /// nil if the count does not fit the model or a value is not finite.
    public init?(flat: [Float], config c: ViTConfig) {
        guard flat.count == Self.count(config: c), flat.allSatisfy(\.isFinite) else { return nil }
        let h = c.depth * c.heads
        headTaylor = Array(flat[0 ..< h])
        headGrow = Array(flat[h ..< 2 * h])
        neuronGrow = Array(flat[(2 * h)...])
    }

    /// self += weight · other (workers' scores weighted by their images).
    public mutating func add(_ o: UnitScores, weight: Float) {
        for i in headTaylor.indices { headTaylor[i] += weight * o.headTaylor[i]; headGrow[i] += weight * o.headGrow[i] }
        for i in neuronGrow.indices { neuronGrow[i] += weight * o.neuronGrow[i] }
    }

    public mutating func scale(_ s: Float) {
        for i in headTaylor.indices { headTaylor[i] *= s; headGrow[i] *= s }
        for i in neuronGrow.indices { neuronGrow[i] *= s }
    }

    /// The grow scores of every unit from a gradient in the full layout.
    public mutating func setGrowScores(gradient g: UnsafePointer<Float>, model: ViTModel) {
        let c = model.config
        for l in 0 ..< c.depth {
            for h in 0 ..< c.heads { headGrow[l * c.heads + h] = Float(UnitElements.l1(g, head: h, block: l, model: model)) }
            for j in 0 ..< c.hidden { neuronGrow[l * c.hidden + j] = Float(UnitElements.l1(g, neuron: j, block: l, model: model)) }
        }
    }
}

/// S2ViTE's topology update and SSP's one-shot pruning, unit by unit. Every block keeps
/// its head and neuron counts through an update. Pruned units are zeroed with their
/// optimizer moments; grown units get their candidate weights (fresh incoming weights,
/// zero outgoing: they start adding nothing) and zero moments.
public enum StructuredPruneAndGrow {
    /// Neuron prune score: ‖W1[j,:]‖₁ + ‖W2[:,j]‖₁ (the coordinator has the weights).
    public static func neuronMagnitude(_ params: UnsafePointer<Float>, neuron j: Int, block l: Int, model: ViTModel) -> Float {
        var s: Float = 0
        UnitElements.neuron(j, block: l, model: model) { o, n, part in
            if part != .incomingBias { s += VectorOps.absSum(params + o, n) }
        }
        return s
    }

    /// One update with prune-and-grow fraction `fraction`; returns the element changes
    /// per prunable tensor (for the wire's change lists).
    @discardableResult
    public static func update(masks: MaskSet, model: ViTModel, params: FloatBuffer, scores: UnitScores, fraction: Double,
                              candidateSeed: UInt64, moments: [FloatBuffer], rule: UnitExchange = .floor) -> [PruneAndGrow.LayerChange] {
        let c = model.config
        let before = UnitSelection(masks: masks, model: model)
        var after = before
        var grownHeads: [(Int, Int)] = [], grownNeurons: [(Int, Int)] = []
        for l in 0 ..< c.depth {
            let (offH, onH) = exchange(on: before.heads[l], fraction: fraction, rule: rule,
                                       prune: { abs(scores.headTaylor[l * c.heads + $0]) },
                                       grow: { scores.headGrow[l * c.heads + $0] })
            for h in offH { after.heads[l][h] = false }
            for h in onH { after.heads[l][h] = true; grownHeads.append((l, h)) }
            let (offN, onN) = exchange(on: before.neurons[l], fraction: fraction, rule: rule,
                                       prune: { neuronMagnitude(params.pointer, neuron: $0, block: l, model: model) },
                                       grow: { scores.neuronGrow[l * c.hidden + $0] })
            for j in offN { after.neurons[l][j] = false }
            for j in onN { after.neurons[l][j] = true; grownNeurons.append((l, j)) }
        }
        return apply(after, masks: masks, model: model, params: params, moments: moments) { p in
            for (l, h) in grownHeads { UnitCandidates.writeHead(h, block: l, model: model, seed: candidateSeed, into: p) }
            for (l, j) in grownNeurons { UnitCandidates.writeNeuron(j, block: l, model: model, seed: candidateSeed, into: p) }
        }
    }

    /// SSP: keeps the budgeted heads of highest |Taylor| and neurons of largest weight
    /// norm in every block; nothing grows.
    @discardableResult
    public static func prune(masks: MaskSet, model: ViTModel, params: FloatBuffer, scores: UnitScores,
                             headDensity: Double, mlpDensity: Double, moments: [FloatBuffer]) -> [PruneAndGrow.LayerChange] {
        let c = model.config
        var after = UnitSelection(masks: masks, model: model)
        let kh = UnitSelection.budget(density: headDensity, of: c.heads), kn = UnitSelection.budget(density: mlpDensity, of: c.hidden)
        for l in 0 ..< c.depth {
            for h in lowest(on: after.heads[l], keep: kh, score: { abs(scores.headTaylor[l * c.heads + $0]) }) { after.heads[l][h] = false }
            for j in lowest(on: after.neurons[l], keep: kn, score: { neuronMagnitude(params.pointer, neuron: $0, block: l, model: model) }) {
                after.neurons[l][j] = false
            }
        }
        return apply(after, masks: masks, model: model, params: params, moments: moments) { _ in }
    }

    /// Which active units go (the k of lowest prune score) and which inactive ones come
    /// (the k of highest grow score); k = ⌊f·active⌋ or ⌈f·active⌉ (`rule`) capped by the
    /// inactive count.
    static func exchange(on: [Bool], fraction: Double, rule: UnitExchange, prune: (Int) -> Float, grow: (Int) -> Float) -> (off: [Int], on: [Int]) {
        let active = on.indices.filter { on[$0] }, inactive = on.indices.filter { !on[$0] }
        let k = rule.count(kept: active.count, inactive: inactive.count, fraction: fraction)
        guard k > 0 else { return ([], []) }
        let off = ranked(active, by: prune, descending: false).prefix(k)
        let grown = ranked(inactive, by: grow, descending: true).prefix(k)
        return (Array(off), Array(grown))
    }

    static func lowest(on: [Bool], keep: Int, score: (Int) -> Float) -> [Int] {
        let active = on.indices.filter { on[$0] }
        guard active.count > keep else { return [] }
        return Array(ranked(active, by: score, descending: false).prefix(active.count - keep))
    }

    /// Units ordered by score (ties by index, so the choice is reproducible).
    static func ranked(_ units: [Int], by score: (Int) -> Float, descending: Bool) -> [Int] {
        let scored: [(unit: Int, score: Float)] = units.map { ($0, score($0)) }
        return scored.sorted { a, b in
            if a.score != b.score { return descending ? a.score > b.score : a.score < b.score }
            return a.unit < b.unit
        }.map(\.unit)
    }

    /// Writes `after` into the mask, zeroes what went off and (after `grow` has written
    /// the grown units' weights) the moments of everything that changed.
    static func apply(_ after: UnitSelection, masks: MaskSet, model: ViTModel, params: FloatBuffer, moments: [FloatBuffer],
                      grow: (UnsafeMutablePointer<Float>) -> Void) -> [PruneAndGrow.LayerChange] {
        let old = masks.prunable.map { Array(masks.mask.view($0)) }
        after.write(to: masks, model: model)
        var changes: [PruneAndGrow.LayerChange] = []
        for (t, was) in zip(masks.prunable, old) {
            let m = masks.mask.pointer + t.offset, w = params.pointer + t.offset
            var off: [Int] = [], on: [Int] = []
            for i in 0 ..< t.count where (was[i] != 0) != (m[i] != 0) {
                if m[i] != 0 { on.append(i); masks.noteActive(t, i) } else { off.append(i) }
                w[i] = 0
                for b in moments { b.pointer[t.offset + i] = 0 }
            }
            changes.append(PruneAndGrow.LayerChange(name: t.name, pruned: off, grown: on))
        }
        grow(params.pointer)
        masks.bumpVersion()
        return changes
    }
}
