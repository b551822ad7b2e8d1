import Core
import Model
import Sparsity

/// A gradient as the k largest-magnitude entries of each tensor: per tensor of the layout,
/// strictly increasing positions within the tensor and their values.
public struct SparseGradient: Sendable, Equatable {
    public var indices: [[UInt32]]
    public var values: [[Float]]

    public init(indices: [[UInt32]], values: [[Float]]) { self.indices = indices; self.values = values }

    public var entries: Int { indices.reduce(0) { $0 + $1.count } }

    /// tensor count, then per tensor: positions (PositionCodec, smallest code), values.
    public func encode(codec: ValueCodec, layout: ParameterLayout, into w: inout ByteWriter) {
        w.u32(UInt32(indices.count))
        for (t, spec) in layout.tensors.enumerated() {
            indices[t].withUnsafeBufferPointer { PositionCodec.encode($0, bound: spec.count, into: &w) }
            values[t].withUnsafeBufferPointer { v in
                codec.encode(v.baseAddress ?? UnsafePointer(bitPattern: 4)!, count: v.count, into: &w)
            }
        }
    }

    /// Reads what `encode` wrote for this layout, checking every position against its
    /// tensor.
    public static func decode(_ r: inout ByteReader, codec: ValueCodec, layout: ParameterLayout) throws -> SparseGradient {
        let n = Int(try r.u32("sparse tensors"))
        guard n == layout.tensors.count else { throw WireError.malformedPayload("\(n) sparse tensors, this layout has \(layout.tensors.count)") }
        var indices: [[UInt32]] = [], values: [[Float]] = []
        indices.reserveCapacity(n); values.reserveCapacity(n)
        var positions: [UInt32] = []
        for spec in layout.tensors {
            try PositionCodec.decode(&r, bound: spec.count, maxCount: spec.count, into: &positions)
            var v = [Float](repeating: 0, count: positions.count)
            try v.withUnsafeMutableBufferPointer { p in
                if !p.isEmpty { try codec.decode(&r, into: p.baseAddress!, count: p.count) }
            }
            indices.append(positions); values.append(v)
        }
        return SparseGradient(indices: indices, values: values)
    }

    /// Whether every value is finite.
    public var isFinite: Bool { values.allSatisfy { $0.allSatisfy(\.isFinite) } }

    /// Adds weight · value at each entry's place in `out` (full layout).
    public func add(into out: UnsafeMutablePointer<Float>, weight: Float, layout: ParameterLayout) {
        for (t, spec) in layout.tensors.enumerated() {
            let base = out + spec.offset
            values[t].withUnsafeBufferPointer { v in
                for (j, p) in indices[t].enumerated() { base[Int(p)] += weight * v[j] }
            }
        }
    }
}

/// A worker's top-k uplink with error feedback (EF-SGD, Deep Gradient Compression): the
/// fresh gradient is added to what earlier steps did not send, the k largest magnitudes of
/// each tensor are sent, and everything else stays in the residual for later steps, so
/// nothing is lost, only delayed: over any run of steps, the sent values plus the residual
/// sum to the gradients (`sentPlusResidualIsTheGradientSum` checks it per weight).
///
/// k = ⌈density · active⌉ per tensor (at least one for a tensor with an active weight).
/// The residual follows the masks: an inactive weight holds none (a pruned weight's
/// residual is dropped with it, a grown one starts at zero). It lives in this worker
/// only: a worker that leaves loses its own unsent residual, at most one step's worth of
/// gradient per entry it never got to send, and nothing the others sent.
public final class TopKCompressor: @unchecked Sendable {
    public let layout: ParameterLayout
    /// Unsent gradient, full layout.
    public let residual: FloatBuffer
    /// Magnitudes of one tensor's active entries (scratch).
    var magnitudes: [Float] = []
    /// Positions of one tensor's active entries, increasing (scratch).
    var positions: [UInt32] = []

    public init(layout: ParameterLayout) {
        self.layout = layout
        residual = FloatBuffer(count: layout.count)
    }

    /// k for a tensor with `active` active weights.
    public static func k(density: Double, active: Int) -> Int {
        guard active > 0 else { return 0 }
        return min(active, max(1, Int((density * Double(active)).rounded(.up))))
    }

    /// Adds `gradient` (full layout) to the residual, takes the top k of each tensor by
    /// magnitude among the active weights, and leaves in the residual what was not sent
    /// (and, with bf16 values, the rounding of what was). NaN counts as the largest
    /// magnitude, so a broken gradient is sent (and refused), not hidden in the residual.
    /// `denseVectors`: tensors of one dimension (biases, LayerNorm) go whole, as DGC's
    /// reference code does (it compresses only `param.dim() > 1`): they are a percent of
    /// the weights and, at one entry in a hundred, would wait a hundred steps per value.
    public func compress(_ gradient: UnsafePointer<Float>, mask: MaskSet?, density: Double, codec: ValueCodec = .fp32,
                         denseVectors: Bool = false) -> SparseGradient {
        let acc = residual.pointer
        let m = mask?.mask.pointer
        var indices: [[UInt32]] = [], values: [[Float]] = []
        indices.reserveCapacity(layout.tensors.count); values.reserveCapacity(layout.tensors.count)
        for t in layout.tensors {
            let a = acc + t.offset, g = gradient + t.offset
            // One pass: acc = residual + gradient on the active weights (inactive ones hold
            // nothing), and the active entries' positions and magnitudes for the selection.
            magnitudes.removeAll(keepingCapacity: true)
            positions.removeAll(keepingCapacity: true)
            if let mt = m.map({ $0 + t.offset }) {
                for i in 0 ..< t.count {
                    if mt[i] != 0 {
                        a[i] += g[i]
                        positions.append(UInt32(i)); magnitudes.append(Self.magnitude(a[i]))
                    } else {
                        a[i] = 0
                    }
                }
            } else {
                for i in 0 ..< t.count {
                    a[i] += g[i]
                    positions.append(UInt32(i)); magnitudes.append(Self.magnitude(a[i]))
                }
            }
            let active = magnitudes.count
            let k = denseVectors && t.shape.count <= 1 ? active : Self.k(density: density, active: active)
            var idx: [UInt32] = [], val: [Float] = []
            if k > 0 {
                // After the selection the k-1 entries past the k-th largest are all ≥ it, so
                // the count strictly above it needs no pass over the tensor.
                let threshold = Self.kthLargest(&magnitudes, k)
                var ties = k
                for j in active - k + 1 ..< active where magnitudes[j] > threshold { ties -= 1 }
                // Strictly above the threshold, and the first `ties` at it, in position order.
                idx.reserveCapacity(k); val.reserveCapacity(k)
                for p in positions {
                    let i = Int(p), mag = Self.magnitude(a[i])
                    guard mag > threshold || (mag == threshold && ties > 0) else { continue }
                    if mag == threshold { ties -= 1 }
                    let sent = codec == .bf16 ? BFloat16.float(BFloat16.bits(a[i])) : a[i]
                    idx.append(p); val.append(sent)
                    a[i] = a[i].isNaN ? 0 : a[i] - sent
                }
            }
            indices.append(idx); values.append(val)
        }
        return SparseGradient(indices: indices, values: values)
    }

    /// After a topology change: inactive weights hold no residual.
    public func follow(_ mask: MaskSet) {
        let a = residual.pointer, m = mask.mask.pointer
        for i in 0 ..< layout.count where m[i] == 0 { a[i] = 0 }
    }

    /// Forgets everything unsent (a new run, or a resync).
    public func reset() { residual.zero() }

    @inline(__always)
    static func magnitude(_ x: Float) -> Float { x.isNaN ? .infinity : abs(x) }

    /// The k-th largest value of `xs` (1-based k ≤ count), reordering it: Hoare's
    /// selection, expected linear time.
    static func kthLargest(_ xs: inout [Float], _ k: Int) -> Float {
        precondition(k >= 1 && k <= xs.count)
        let target = xs.count - k  // position in ascending order
        return xs.withUnsafeMutableBufferPointer { p -> Float in
            var lo = 0, hi = p.count - 1
            var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
            while lo < hi {
                seed = seed &* 6364136223846793005 &+ 1442695040888963407
                let pivot = p[lo + Int((seed >> 33) % UInt64(hi - lo + 1))]
                var i = lo, j = hi
                while i <= j {
                    while p[i] < pivot { i += 1 }
                    while p[j] > pivot { j -= 1 }
                    if i <= j { p.swapAt(i, j); i += 1; j -= 1 }
                }
                if target <= j { hi = j } else if target >= i { lo = i } else { return p[target] }
            }
            return p[target]
        }
    }
}
