import Core
import Kernels
import Model

/// S2ViTE's structured topology: which attention heads and MLP neurons of each block are
/// on (the units are defined in `CompactPlan`). On the wire and in the optimizer it is an
/// element-wise `MaskSet` over the units' tensors, so the SViTE machinery (packed active
/// values, change lists, zero moments) carries it unchanged; this type reads and writes
/// that mask unit by unit.
public struct UnitSelection: Sendable, Equatable {
    /// heads[l][h]: head h of block l is on.
    public var heads: [[Bool]]
    /// neurons[l][j]: MLP neuron j of block l is on.
    public var neurons: [[Bool]]

    public init(heads: [[Bool]], neurons: [[Bool]]) {
        self.heads = heads; self.neurons = neurons
    }

    /// Every unit on.
    public init(config c: ViTConfig) {
        precondition(!c.isCompact, "UnitSelection: units are defined on a full model, not a compact one")
        heads = Array(repeating: Array(repeating: true, count: c.heads), count: c.depth)
        neurons = Array(repeating: Array(repeating: true, count: c.hidden), count: c.depth)
    }

    /// The tensors a structured mask covers: each block's qkv weight and bias, proj
    /// weight, fc1 weight and bias, and fc2 weight.
    public static func prunableTensors(_ layout: ParameterLayout) -> [TensorSpec] {
        let suffixes = [".attn.qkv.weight", ".attn.qkv.bias", ".attn.proj.weight", ".mlp.fc1.weight", ".mlp.fc1.bias", ".mlp.fc2.weight"]
        return layout.tensors.filter { t in t.name.hasPrefix("blocks.") && suffixes.contains { t.name.hasSuffix($0) } }
    }

    /// Units kept per layer for a density: ⌈density·count⌉ (the paper rounds up), at
    /// least one so a block never loses its whole attention or MLP.
    public static func budget(density: Double, of count: Int) -> Int {
        max(1, min(count, Int((density * Double(count) - 1e-9).rounded(.up))))
    }

    /// A random selection with the budgets of `headDensity` and `mlpDensity` in every block.
    public static func random(config c: ViTConfig, headDensity: Double, mlpDensity: Double, seed: UInt64) -> UnitSelection {
        var rng = Xoshiro256(seed: seed)
        func pick(_ k: Int, of n: Int) -> [Bool] {
            var order = Array(0 ..< n)
            for i in 0 ..< k { order.swapAt(i, i + Int(rng.next() % UInt64(n - i))) }
            var on = [Bool](repeating: false, count: n)
            for i in order[0 ..< k] { on[i] = true }
            return on
        }
        let kh = budget(density: headDensity, of: c.heads), kn = budget(density: mlpDensity, of: c.hidden)
        var s = UnitSelection(config: c)
        for l in 0 ..< c.depth {
            s.heads[l] = pick(kh, of: c.heads)
            s.neurons[l] = pick(kn, of: c.hidden)
        }
        return s
    }

    public var keptHeads: [[Int]] { heads.map(Self.on) }
    public var keptNeurons: [[Int]] { neurons.map(Self.on) }
    static func on(_ flags: [Bool]) -> [Int] { flags.indices.filter { flags[$0] } }
    public var headCount: Int { heads.reduce(0) { $0 + $1.filter { $0 }.count } }
    public var neuronCount: Int { neurons.reduce(0) { $0 + $1.filter { $0 }.count } }

    public func plan(full: ViTModel) -> CompactPlan {
        CompactPlan(full: full, keptHeads: keptHeads, keptNeurons: keptNeurons)
    }

    // MARK: the element-wise mask

    /// Reads the selection from a structured mask: a unit is on when its first q row
    /// (head) or its fc1 row (neuron) is active.
    public init(masks: MaskSet, model: ViTModel) {
        self.init(mask: masks.mask.pointer, model: model)
    }

    /// The same from any 0/1 buffer in the layout (e.g. the ever-active map).
    public init(mask m: UnsafePointer<Float>, model: ViTModel) {
        let c = model.config
        self.init(config: c)
        for l in 0 ..< c.depth {
            let b = model.offsets.blocks[l]
            let q = UnitElements.slices("attn.qkv.weight", c), fc1 = UnitElements.slices("mlp.fc1.weight", c)
            for h in 0 ..< c.heads { heads[l][h] = m[b.qkvWeight + q.offset(outer: 0, unit: h)] != 0 }
            for j in 0 ..< c.hidden { neurons[l][j] = m[b.fc1Weight + fc1.offset(outer: 0, unit: j)] != 0 }
        }
    }

    /// From weights alone (an export without masks): a kept unit's biases or, just grown,
    /// its outgoing weights may be zero, so a unit is on when any incoming weight is.
    public init(weights w: UnsafePointer<Float>, model: ViTModel) {
        let c = model.config
        self.init(config: c)
        func on(_ visit: ((Int, Int, UnitElements.Part) -> Void) -> Void) -> Bool {
            var any = false
            visit { o, n, part in if part == .incomingWeight && VectorOps.absSum(w + o, n) > 0 { any = true } }
            return any
        }
        for l in 0 ..< c.depth {
            for h in 0 ..< c.heads { heads[l][h] = on { UnitElements.head(h, block: l, model: model, $0) } }
            for j in 0 ..< c.hidden { neurons[l][j] = on { UnitElements.neuron(j, block: l, model: model, $0) } }
        }
    }

    /// Writes the selection into a structured mask (every element of every unit).
    public func write(to masks: MaskSet, model: ViTModel) {
        let m = masks.mask.pointer
        for l in heads.indices {
            for h in heads[l].indices {
                let v: Float = heads[l][h] ? 1 : 0
                UnitElements.head(h, block: l, model: model) { o, n, _ in (m + o).update(repeating: v, count: n) }
            }
            for j in neurons[l].indices {
                let v: Float = neurons[l][j] ? 1 : 0
                UnitElements.neuron(j, block: l, model: model) { o, n, _ in (m + o).update(repeating: v, count: n) }
            }
        }
    }
}

/// Where a unit's parameters sit in the full layout, as runs of (offset, count), from the
/// model's one definition of the units (`UnitSlices`).
public enum UnitElements {
    public typealias Part = UnitSlices.Part

    static func slices(_ suffix: Substring, _ c: ViTConfig) -> UnitSlices { UnitSlices.of(suffix, config: c)! }

    public static func head(_ h: Int, block l: Int, model: ViTModel, _ body: (_ offset: Int, _ count: Int, _ part: Part) -> Void) {
        let c = model.config, b = model.offsets.blocks[l]
        let qkvW = slices("attn.qkv.weight", c), qkvB = slices("attn.qkv.bias", c), proj = slices("attn.proj.weight", c)
        for which in 0 ..< qkvW.outer {
            body(b.qkvWeight + qkvW.offset(outer: which, unit: h), qkvW.inner, qkvW.part)
            body(b.qkvBias + qkvB.offset(outer: which, unit: h), qkvB.inner, qkvB.part)
        }
        for i in 0 ..< proj.outer { body(b.projWeight + proj.offset(outer: i, unit: h), proj.inner, proj.part) }
    }

    public static func neuron(_ j: Int, block l: Int, model: ViTModel, _ body: (_ offset: Int, _ count: Int, _ part: Part) -> Void) {
        let c = model.config, b = model.offsets.blocks[l]
        let fc1W = slices("mlp.fc1.weight", c), fc1B = slices("mlp.fc1.bias", c), fc2 = slices("mlp.fc2.weight", c)
        body(b.fc1Weight + fc1W.offset(outer: 0, unit: j), fc1W.inner, fc1W.part)
        body(b.fc1Bias + fc1B.offset(outer: 0, unit: j), fc1B.inner, fc1B.part)
        for i in 0 ..< fc2.outer { body(b.fc2Weight + fc2.offset(outer: i, unit: j), fc2.inner, fc2.part) }
    }

    /// Σ |values| over a unit's elements.
    public static func l1(_ values: UnsafePointer<Float>, head h: Int, block l: Int, model: ViTModel) -> Double {
        var s = 0.0
        head(h, block: l, model: model) { o, n, _ in s += Double(VectorOps.absSum(values + o, n)) }
        return s
    }

    public static func l1(_ values: UnsafePointer<Float>, neuron j: Int, block l: Int, model: ViTModel) -> Double {
        var s = 0.0
        neuron(j, block: l, model: model) { o, n, _ in s += Double(VectorOps.absSum(values + o, n)) }
        return s
    }
}

/// The weights an inactive unit is given when it is scored for growth and, if chosen,
/// when it grows: fresh incoming weights (timm's N(0, 0.02²)), zero incoming biases and
/// zero outgoing weights. The unit then adds exactly nothing to the output (as RigL's
/// zero-initialised connections), but, unlike a unit that is zero on both sides (a saddle
/// where every gradient of the unit vanishes), its outgoing weights get a gradient:
/// ∂L/∂W_out = Σ dY ⊗ A with A ≠ 0. Workers and the coordinator draw the same values from
/// (seed, block, unit), so a grown unit starts exactly where it was scored.
public enum UnitCandidates {
    public static func seed(_ base: UInt64, block l: Int, unit: Int, isHead: Bool) -> UInt64 {
        var h = base ^ 0x5DEE_CE66_D1CE_4E5B
        for v in [UInt64(l), UInt64(unit), isHead ? 1 : 2] {
            h = (h ^ v) &* 0x9E37_79B9_7F4A_7C15
            h ^= h >> 29
        }
        return h
    }

    public static func writeHead(_ h: Int, block l: Int, model: ViTModel, seed: UInt64, into p: UnsafeMutablePointer<Float>) {
        var rng = Xoshiro256(seed: Self.seed(seed, block: l, unit: h, isHead: true))
        UnitElements.head(h, block: l, model: model) { o, n, part in fill(p + o, n, part, &rng) }
    }

    public static func writeNeuron(_ j: Int, block l: Int, model: ViTModel, seed: UInt64, into p: UnsafeMutablePointer<Float>) {
        var rng = Xoshiro256(seed: Self.seed(seed, block: l, unit: j, isHead: false))
        UnitElements.neuron(j, block: l, model: model) { o, n, part in fill(p + o, n, part, &rng) }
    }

    /// Gives every inactive unit of `selection` its candidate weights in `params`.
    public static func writeInactive(_ selection: UnitSelection, model: ViTModel, seed: UInt64, into p: UnsafeMutablePointer<Float>) {
        for l in selection.heads.indices {
            for (h, on) in selection.heads[l].enumerated() where !on { writeHead(h, block: l, model: model, seed: seed, into: p) }
            for (j, on) in selection.neurons[l].enumerated() where !on { writeNeuron(j, block: l, model: model, seed: seed, into: p) }
        }
    }

    static func fill(_ p: UnsafeMutablePointer<Float>, _ n: Int, _ part: UnitElements.Part, _ rng: inout Xoshiro256) {
        switch part {
        case .incomingWeight: for i in 0 ..< n { p[i] = rng.nextTruncatedNormal(std: 0.02) }
        case .incomingBias, .outgoing: p.update(repeating: 0, count: n)
        }
    }
}
