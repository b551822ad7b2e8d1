import Core
import Datasets
import Foundation
import Model
import Sparsity
import Steps
import Training
import Wire

/// How a round starts: each member's share of the step's images and the frames that bring
/// its worker what it lacks (the weights or the update, the mask, the order).
extension CoordinatorService {
    /// What a worker holding mask version `have` needs to reach the current one.
    func maskUpdate(for have: Int) -> MaskUpdate? {
        guard let m = masks, have != m.version else { return nil }
        if have >= 0, have == m.version - 1, let t = updates.last?.topology, t.maskVersion == UInt32(m.version) {
            return .change(version: t.maskVersion, layers: t.layers.map { MaskUpdate.LayerChange(off: $0.off, on: $0.on) })
        }
        return .bitmap(version: UInt32(m.version), bits: m.bitmap)
    }

    /// Each live worker gets its share of the step's images and what it lacks of the
    /// parameters and the mask. Runs while the trainer waits (its window is open).
    func startRound(_ work: StepWork) {
        let params = trainer.window!
        let now = clock.seconds
        let live = membership.live.sorted { ($0.name, $0.rank) < ($1.name, $1.rank) }
        // Benched workers sit the step out, unless every one is benched: the run then goes
        // at the pace of those it has.
        let taking = live.filter { $0.deadline.takesPart(at: now) }
        let members = taking.isEmpty ? live : taking
        let weights = balancer.shares(step: work.step, members: members.map { ($0.rank, $0.throughput) })
        let shares = EpochPlan.split(work.positions, shares: weights)
        let m = masks
        aggregator.begin(request: work.order.request, masks: m)
        let round = StepRound(step: work.step, members: members, planned: work.positions.count, aggregator: aggregator)
        self.round = round
        if replicated {
            // Benched workers get no frame: a slow link would only queue more of them. The
            // whole state brings their replicas back when the bench ends.
            startReplicatedRound(work, round: round, shares: shares)
            return
        }
        // Sparse runs send only the active values; both sides know the mask.
        var values = params, count = layout.count
        if let m {
            m.pack(params, into: packedParams.pointer)
            values = UnsafePointer(packedParams.pointer)
            count = m.packedCount
        }
        for (w, range) in zip(members, shares) where !range.isEmpty {
            let a = Assignment(epoch: UInt32(work.epoch), start: UInt32(range.lowerBound), count: UInt32(range.count))
            let fresh = w.version == work.step && w.maskVersion == (m?.version ?? -1)
            let payload = Payload.params(StepFrame(order: work.order, shares: .one(a), mask: maskUpdate(for: w.maskVersion)),
                                         values: fresh ? nil : values, count: count)
            w.share = range.count
            let dropped = hooks.dropStepFrame.map { $0.worker == w.name && $0.step == work.step } ?? false
            if dropped || hooks.garbleEveryStepFrameTo == w.name {
                if dropped { hooks.dropStepFrame = nil }
                if hooks.garbleStepFrame || !dropped {
                    // As a frame damaged where no checksum sees it (a bug, a hostile peer).
                    var noise = Xoshiro256(seed: UInt64(work.step))
                    _ = send(.params, (0 ..< max(64, payload.count / 8)).map { _ in UInt8(truncatingIfNeeded: noise.next()) }, to: w, step: work.step)
                }
                // As a frame lost on the way: the worker never sees the step.
                w.sentAt = clock.seconds
                round.expect(w)
                continue
            }
            if send(.params, payload, to: w, step: work.step) {
                w.sentAt = clock.seconds
                w.version = work.step
                w.maskVersion = m?.version ?? -1
                round.expect(w)
            }
        }
    }

    /// The replicated downlink: one frame for every live worker, encoded once, with the
    /// update that takes the replicas to this step and everyone's share (a worker with none
    /// still applies the update). A worker whose replica is not at the previous step (it
    /// joined between steps, or asked for a resync) is first sent the whole state.
    private func startReplicatedRound(_ work: StepWork, round: StepRound, shares: [Range<Int>]) {
        let m = masks
        let update = updates.last.flatMap { Int($0.step) + 1 == work.step ? $0 : nil }
        let table = zip(round.members, shares).filter { !$0.1.isEmpty }.map {
            RankAssignment(rank: UInt32($0.0.rank), assignment: Assignment(epoch: UInt32(work.epoch), start: UInt32($0.1.lowerBound), count: UInt32($0.1.count)))
        }
        let payload = Payload.params(StepFrame(order: work.order, shares: .table(table), update: update), layout: layout)
        let header = FrameHeader(type: .params, runID: runID, step: UInt64(work.step), maskVersion: trainer.maskVersion, layoutHash: layout.hash)
        let frame = Frame(header: header, payload: payload).encoded(compress: options.compress)
        for (w, range) in zip(round.members, shares) {
            let inSync = w.version == work.step || (update != nil && w.version == work.step - 1)
            if !inSync {
                // A member of the round gets the whole state, benched or not (every worker may be).
                guard send(.welcome, welcomePayload(for: w, withState: true), to: w, step: work.step) else { continue }
                w.stateSentInRound = work.step
                w.version = work.step
            }
            guard sendEncoded(.params, frame, to: w) else { continue }
            w.version = work.step
            w.maskVersion = m?.version ?? -1
            w.share = range.count
            if !range.isEmpty {
                w.sentAt = clock.seconds
                round.expect(w)
            }
        }
    }

    /// The welcome a worker gets: while the trainer waits, the weights of the step being
    /// gathered and the whole mask (and, replicated, the optimizer's state), and the worker
    /// takes part from the next step; between steps, neither (the next step brings both).
    func welcomePayload(for record: WorkerRecord, withState: Bool? = nil) -> [UInt8] {
        let info = WelcomeInfo(rank: record.rank, runID: runID, config: config.yaml,
                               heartbeatSeconds: options.heartbeatSeconds, gradientCodec: options.gradientCodec,
                               replicated: replicated ? true : nil)
        // A benched worker gets the weights with its next share, not now: on a slow link
        // they would take seconds that its next try then waits behind.
        if let p = trainer.window, withState ?? record.deadline.takesPart(at: clock.seconds) {
            record.version = trainer.step
            record.maskVersion = masks?.version ?? -1
            let snapshot = replicated ? server.map { s in
                OptimizerSnapshot(updates: s.optimizer.updates, varianceFrozen: s.optimizer.varianceFrozen,
                                  buffers: s.optimizer.stateBuffers.map { UnsafePointer($0.buffer.pointer) })
            } : nil
            return Payload.welcome(info, params: p, count: layout.count, mask: masks.map { (UInt32($0.version), $0.bitmap) }, optimizer: snapshot)
        }
        record.version = -1
        record.maskVersion = -1
        return Payload.welcome(info, params: nil, count: 0, mask: nil, sparse: config.sparsity.isSparse)
    }

    func completeRound() {
        guard let round else { return }
        round.active = false
        trainer.result = round.finish()
        if trainer.result != nil {
            runStatus?.recordBytes(up: round.bytesUp, down: round.bytesDown, workers: round.members.count)
            runStatus?.recordStepDone(round.step + 1)
        }
        trainer.done = true
    }
}
