import Compression
import Core
import Model
import Sparsity
import Steps

/// What an update changes: the weights, the optimizer's moments and the masks. The
/// coordinator's `ServerState` holds one; every worker of a run with the update downlink
/// holds a replica. The update rule is written here once: `step` is the optimizer part both
/// make, `apply` is what a replica does with a `ParameterUpdate`, and `recordTopology` /
/// `applyTopology` are the two ends of a topology change's grown values.
public final class ModelState {
    public let layout: ParameterLayout
    public let params: FloatBuffer
    /// nil: a worker of the weights downlink, which holds no replica of the optimizer.
    public let optimizer: Optimizer?
    /// The sparse topology (nil: dense).
    public var masks: MaskSet?
    /// The frozen variance's factor per tensor the last update took (nil: none): ranks of
    /// a replica's top-k compare across tensors with it.
    public private(set) var varianceScale: [Float]?
    /// A replica's dense copy of an update's gradient.
    private var scratch: FloatBuffer?

    public init(layout: ParameterLayout, optimizer: Optimizer?, masks: MaskSet? = nil) {
        self.layout = layout
        params = FloatBuffer(count: layout.count)
        self.optimizer = optimizer
        self.masks = masks
    }

    /// The optimizer part of update `u` on `gradient` (what the optimizer takes: masked,
    /// clipped): the variance frozen if the update says so, the step with its learning
    /// rate, variance scales and update count, then the mask on the weights.
    public func step(_ u: ParameterUpdate, gradient: UnsafePointer<Float>) {
        guard let o = optimizer else { preconditionFailure("ModelState.step: no optimizer") }
        o.updates = Int(u.optimizerUpdates) - 1
        if u.freezeVariance { o.freezeVariance() }
        o.step(params: params.pointer, grads: gradient, lr: u.lr, varianceScale: u.varianceScale, estimate: u.estimate)
        varianceScale = u.varianceScale
        masks?.apply(to: params)
    }

    /// A replica takes the coordinator's update: the optimizer step on exactly the values
    /// its optimizer took, then the topology change. Throws when the update does not fit
    /// this replica (it then holds a state to be replaced, not to be used).
    public func apply(_ u: ParameterUpdate) throws {
        guard u.applied else { return }
        guard optimizer != nil else { throw ReplayError("an update for a worker that holds no replica of the optimizer") }
        guard let g = u.gradient else { throw ReplayError("an update without its gradient") }
        let dense = scratch ?? FloatBuffer(count: layout.count)
        scratch = dense
        dense.zero()
        g.scatter(into: dense.pointer, layout: layout)
        step(u, gradient: dense.pointer)
        if let t = u.topology { try applyTopology(t) }
    }

    /// What a topology change (made by the sparsity method, after `step`) did, for the
    /// replicas: the places switched off and on, and what each grown place now holds.
    public func recordTopology(_ changes: [PruneAndGrow.LayerChange]) -> TopologyChange? {
        guard let m = masks, !changes.isEmpty else { return nil }
        let buffers = optimizer?.stateBuffers.map(\.buffer) ?? []
        return TopologyChange(maskVersion: UInt32(m.version), layers: zip(m.prunable, changes).map { t, c in
            TopologyChange.Layer(off: c.pruned.map(UInt32.init), on: c.grown.map(UInt32.init),
                                 weights: c.grown.map { params.pointer[t.offset + $0] },
                                 moments: buffers.map { b in c.grown.map { b.pointer[t.offset + $0] } })
        })
    }

    /// A replica's side of `recordTopology`: the masks to the change's version, switched-off
    /// places zeroed with their moments, grown places set to the values recorded.
    public func applyTopology(_ t: TopologyChange) throws {
        guard let m = masks else { throw ReplayError("a topology update in a dense run") }
        let buffers = optimizer?.stateBuffers.map(\.buffer) ?? []
        guard t.layers.count == m.prunable.count,
              t.layers.allSatisfy({ l in l.weights.count == l.on.count && l.moments.count == buffers.count
                  && l.moments.allSatisfy { $0.count == l.on.count } }) else {
            throw ReplayError("the topology update does not fit this model and optimizer")
        }
        guard m.apply(change: t.layers.map { ($0.off, $0.on) }, version: Int(t.maskVersion)) else {
            throw ReplayError("the topology update to mask version \(t.maskVersion) does not fit mask version \(m.version)")
        }
        for (spec, l) in zip(m.prunable, t.layers) {
            let p = params.pointer + spec.offset
            for i in l.off {
                p[Int(i)] = 0
                for b in buffers { b.pointer[spec.offset + Int(i)] = 0 }
            }
            for (j, i) in l.on.enumerated() {
                p[Int(i)] = l.weights[j]
                for (b, values) in zip(buffers, l.moments) { b.pointer[spec.offset + Int(i)] = values[j] }
            }
        }
    }

    /// CRC-32 of the weights and moments (tests compare replicas with it).
    public var digest: UInt32 {
        optimizer?.stateDigest(params: params.pointer) ?? ParameterUpdate.checksum(params.pointer, count: layout.count)
    }
}

/// An update that does not fit the replica it was sent to.
public struct ReplayError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
