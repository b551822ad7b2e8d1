import Compression
import Core
import Model
import Sparsity
import Steps

/// A worker's share of a step: positions [start, start + count) of epoch `epoch`'s
/// permutation.
public struct Assignment: Sendable, Equatable {
    public var epoch: UInt32
    public var start: UInt32
    public var count: UInt32
    public init(epoch: UInt32, start: UInt32, count: UInt32) { self.epoch = epoch; self.start = start; self.count = count }
}

/// One worker's share in a broadcast step frame.
public struct RankAssignment: Sendable, Equatable {
    public var rank: UInt32
    public var assignment: Assignment
    public init(rank: UInt32, assignment: Assignment) { self.rank = rank; self.assignment = assignment }
}

/// A step frame (coordinator → worker): the step's order and what the worker lacks to
/// compute it. The weights, when it carries them, follow it in the payload.
public struct StepFrame: Sendable, Equatable {
    public enum Shares: Sendable, Equatable {
        /// This worker's share (the weights downlink sends each worker its own frame).
        case one(Assignment)
        /// Every worker's share by rank (the update downlink sends one frame to all).
        case table([RankAssignment])
    }

    public var order: StepOrder
    public var shares: Shares
    /// What takes the worker's mask to the step's topology (nil: it holds it).
    public var mask: MaskUpdate?
    /// The update that takes the replicas to this step (the update downlink).
    public var update: ParameterUpdate?

    public init(order: StepOrder, shares: Shares, mask: MaskUpdate? = nil, update: ParameterUpdate? = nil) {
        self.order = order; self.shares = shares; self.mask = mask; self.update = update
    }

    /// This worker's share: its row of the table, or the assignment (nil: none this step).
    public func share(rank: Int) -> Assignment? {
        switch shares {
        case let .one(a): return a
        case let .table(rows): return rows.first { $0.rank == UInt32(clamping: rank) }?.assignment
        }
    }
}

extension Payload {
    // params: tagged fields: 1 assignment (u32 epoch, u32 start, u32 count), 2 assignment
    // table (u32 n, n × (u32 rank, u32 epoch, u32 start, u32 count)), 3 MaskUpdate,
    // 4 StepOrder, 5 ParameterUpdate, 6 the values (u32 n, fp32 values), always last.

    static let valuesField: UInt8 = 6

    /// A step frame; `values` (`count` of them) are the weights when the worker lacks them.
    public static func params(_ f: StepFrame, layout: ParameterLayout? = nil, values: UnsafePointer<Float>? = nil, count: Int = 0) -> [UInt8] {
        precondition(f.update == nil || layout != nil, "an update is encoded for a layout")
        var w = ByteWriter(capacity: 64 + (values == nil ? 0 : 4 * count) + 8 * (f.update?.gradient?.entries ?? 0))
        switch f.shares {
        case let .one(a):
            w.field(1) { $0.u32(a.epoch); $0.u32(a.start); $0.u32(a.count) }
        case let .table(rows):
            w.field(2) { w in
                w.u32(UInt32(rows.count))
                for t in rows { w.u32(t.rank); w.u32(t.assignment.epoch); w.u32(t.assignment.start); w.u32(t.assignment.count) }
            }
        }
        if let mask = f.mask { w.field(3) { mask.encode(into: &$0) } }
        w.field(4) { f.order.encode(into: &$0) }
        if let update = f.update, let layout { w.field(5) { update.encode(into: &$0, layout: layout) } }
        if let values {
            w.field(valuesField) { w in
                w.u32(UInt32(count))
                w.floats(values, count: count)
            }
        }
        return w.bytes
    }

    /// Everything before the values, and the reader left at the values when the frame has
    /// them (nil: it has none); the caller reads them with `values(_:into:count:)` once it
    /// knows how many it expects.
    public static func decodeParams(_ payload: [UInt8], maxLayers: Int, maxIndices: Int,
                                    updates: UpdateContext? = nil) throws -> (StepFrame, values: ByteReader?) {
        var r = ByteReader(payload)
        var shares: StepFrame.Shares?, mask: MaskUpdate?, order: StepOrder?, update: ParameterUpdate?
        try r.fields("params", last: valuesField) { tag, r in
            switch tag {
            case 1:
                shares = .one(Assignment(epoch: try r.u32("epoch"), start: try r.u32("start"), count: try r.u32("count")))
            case 2:
                let n = Int(try r.u32("assignment table rows"))
                guard n <= 65536 else { throw WireError.malformedPayload("\(n) assignment rows") }
                shares = .table(try (0 ..< n).map { _ in
                    RankAssignment(rank: try r.u32("rank"), assignment: Assignment(epoch: try r.u32("epoch"), start: try r.u32("start"),
                                                                                   count: try r.u32("count")))
                })
            case 3:
                mask = try MaskUpdate.decode(&r, maxLayers: maxLayers, maxIndices: maxIndices)
            case 4:
                order = try StepOrder.decode(&r, maxLayers: maxLayers)
            case 5:
                guard let c = updates else { throw WireError.malformedPayload("an update for a worker that holds no replica of the optimizer") }
                update = try ParameterUpdate.decode(&r, context: c)
            default:
                throw WireError.malformedPayload("params field \(tag) (another svite version's)")
            }
        }
        guard let shares, let order else { throw WireError.malformedPayload("a step frame without \(shares == nil ? "shares" : "its order")") }
        var values: ByteReader? = nil
        if r.remaining > 0 {
            // At the values field: its tag and length were read by `fields`.
            values = r
        }
        return (StepFrame(order: order, shares: shares, mask: mask, update: update), values)
    }
}

extension Payload {
    /// A dense run's step frame: the frame, with its values (if any) written into `out`.
    public static func decodeParams(_ payload: [UInt8], into out: UnsafeMutablePointer<Float>, count: Int,
                                    maxLayers: Int = 0, maxIndices: Int = 0) throws -> (StepFrame, hadValues: Bool) {
        let (frame, values) = try decodeParams(payload, maxLayers: maxLayers, maxIndices: maxIndices)
        guard var r = values else { return (frame, false) }
        try Payload.values(&r, into: out, count: count)
        return (frame, true)
    }
}
