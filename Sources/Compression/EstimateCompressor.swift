import Core
import Model
import Sparsity

/// A worker's top-k uplink with a shared estimate (`TopKFeedback.estimate`, EF21-SGDM with
/// one estimate for all workers): the worker keeps its own momentum M of its gradients
/// (β·M + (1−β)·g, AdamW's moving average) and sends the k largest entries of M − G per
/// tensor, where G is the estimate every replica and the coordinator hold alike (AdamW's
/// first moment, which the merged differences move). Nothing waits in a residual: an
/// entry not sent is off in G by at most the k-th largest difference (in rank units), and
/// the next step measures it again (`unsentEntriesAreWithinTheKthDifference` checks it).
///
/// M follows the masks (inactive weights hold none; a grown weight starts at G's value)
/// and lives in this worker only: a worker that leaves or resyncs starts again from G.
public final class EstimateCompressor {
    public let layout: ParameterLayout
    /// The run's choices (`GradientEncoder` sets them; direct calls pass their own).
    public var spec = CompressionSpec()
    /// This worker's momentum, full layout (valid once `started`).
    public let momentum: FloatBuffer
    /// Selects the top k of M − G, which `advance` writes into its residual (so the
    /// difference needs no buffer of its own); nothing is left there across steps.
    let selector: TopKCompressor
    /// Whether `momentum` holds this worker's momentum (false: it starts from G).
    public private(set) var started = false

    public init(layout: ParameterLayout) {
        self.layout = layout
        momentum = FloatBuffer(count: layout.count)
        selector = TopKCompressor(layout: layout)
    }

    /// Takes this step's `gradient` into the momentum (β = AdamW's β1) and returns the top k
    /// of M − `estimate` per tensor, as `TopKCompressor.compress` selects them (the same
    /// density, whole tensors, codec and ranking; the values sent are those the coordinator
    /// will decode). A non-finite gradient is sent (and refused by the coordinator) and the
    /// momentum starts again from G at the next step.
    public func compress(_ gradient: UnsafePointer<Float>, estimate: UnsafePointer<Float>, beta: Float, mask: MaskSet?, density: Double,
                         settings: TopKSettings = TopKSettings(), variance: UnsafePointer<Float>? = nil,
                         tensorScale: [Float]? = nil) -> SparseGradient {
        let n = layout.count
        let m = momentum.pointer
        if !started { m.update(from: estimate, count: n); started = true }
        // d ← M − G overwrites whatever the last step's selection left (its rounding).
        Self.advance(m, selector.residual.pointer, gradient, estimate, beta: beta, mask: mask.map { UnsafePointer($0.mask.pointer) }, count: n)
        let sparse = selector.select(adding: nil, mask: mask, density: density, settings: settings, variance: variance, tensorScale: tensorScale)
        if !Self.allFinite(m, n) { started = false }
        return sparse
    }

    /// m ← β·m + (1−β)·g and d ← m − G on active weights; both 0 on inactive ones.
    static func advance(_ m: UnsafeMutablePointer<Float>, _ d: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                        _ e: UnsafePointer<Float>, beta: Float, mask: UnsafePointer<Float>?, count: Int) {
        typealias V = SIMD16<Float>
        let b = 1 - beta
        var i = 0
        while i + 16 <= count {
            var mi = beta * m.simd(V.self, at: i) + b * g.simd(V.self, at: i)
            if let mask { mi = mi.replacing(with: 0, where: mask.simd(V.self, at: i) .== 0) }
            m.store(mi, at: i)
            d.store(mi - e.simd(V.self, at: i), at: i)
            i += 16
        }
        while i < count {
            let mi = mask.map { $0[i] == 0 } ?? false ? 0 : beta * m[i] + b * g[i]
            m[i] = mi
            d[i] = mi - e[i]
            i += 1
        }
    }

    static func allFinite(_ p: UnsafePointer<Float>, _ n: Int) -> Bool {
        typealias V = SIMD16<Float>
        // x − x is 0 for every finite x and NaN for ±∞ and NaN.
        var acc = V(repeating: 0), i = 0
        while i + 16 <= n { let x = p.simd(V.self, at: i); acc += x - x; i += 16 }
        var tail: Float = 0
        while i < n { tail += p[i] - p[i]; i += 1 }
        return (acc.sum() + tail) == 0
    }

    /// After a topology change: inactive weights hold no momentum, and an active one that
    /// holds none (grown) starts at the estimate's value.
    public func follow(_ mask: MaskSet, estimate: UnsafePointer<Float>?) {
        guard started, let estimate else { return }
        let m = momentum.pointer, k = mask.mask.pointer
        for i in 0 ..< layout.count {
            if k[i] == 0 { m[i] = 0 } else if m[i] == 0 { m[i] = estimate[i] }
        }
    }

    /// Forgets this worker's momentum (a rejoin or resync): the next step starts from G.
    public func reset() { started = false }
}
