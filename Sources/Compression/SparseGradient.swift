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

extension SparseGradient {
    /// The non-zero entries of a full-layout vector (−0 counts: a replay must see the
    /// very bits the optimizer saw).
    public static func nonzeros(of g: UnsafePointer<Float>, layout: ParameterLayout) -> SparseGradient {
        var indices: [[UInt32]] = [], values: [[Float]] = []
        indices.reserveCapacity(layout.tensors.count); values.reserveCapacity(layout.tensors.count)
        for t in layout.tensors {
            let p = g + t.offset
            var idx: [UInt32] = [], val: [Float] = []
            // (Reserved, not touched: a sparse update's pages are never written.)
            idx.reserveCapacity(t.count); val.reserveCapacity(t.count)
            for i in 0 ..< t.count where p[i].bitPattern != 0 { idx.append(UInt32(i)); val.append(p[i]) }
            indices.append(idx); values.append(val)
        }
        return SparseGradient(indices: indices, values: values)
    }

    /// Writes the entries into a zeroed full-layout vector (exactly: 0 + v is v).
    public func scatter(into out: UnsafeMutablePointer<Float>, layout: ParameterLayout) {
        for (t, spec) in layout.tensors.enumerated() {
            let base = out + spec.offset
            values[t].withUnsafeBufferPointer { v in
                for (j, p) in indices[t].enumerated() { base[Int(p)] = v[j] }
            }
        }
    }
}
