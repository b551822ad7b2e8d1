import Training
import Core
import Wire

/// The step round's deadlines and the coordinator's refusals: the rules are `StepDeadline`
/// and `DeadlineRecord` (no sockets); this applies them to the round and tells peers why.
extension CoordinatorService {
    /// Takes off the step every worker whose answer is later than its deadline
    /// (`StepDeadline`); one that keeps missing is benched or dropped (`DeadlineRecord`).
    func checkDeadlines(now: Double) {
        let rate = StepDeadline.roundRate(answers: roundAnswers)
        let straggler = StepDeadline.stragglerSeconds(answers: roundAnswers, members: roundOrder.count, policy: deadlines) ?? .infinity
        for identity in pending.sorted(by: { $0.lexicographicallyPrecedes($1) }) where early[identity] == nil {
            guard let w = membership[identity] else { continue }
            let allowed = w.stateSentInRound == roundStep ? deadlines.ceilingSeconds
                : min(StepDeadline.seconds(share: w.share, throughput: w.throughput, roundRate: rate, policy: deadlines), straggler)
            let elapsed = now - w.sentAt
            guard elapsed > allowed else { continue }
            stopWaiting(for: identity)
            lateThisRound.append(w.name)
            // Its speed is measured when the late answer arrives (if it does), not guessed
            // from the miss: a deadline must not grow with each one a worker misses.
            w.missed = (roundStep, w.sentAt, w.share)
            let last = w.deadline.lastAnswer.map { String(format: "%.1f s ago", now - $0) } ?? "never"
            let outcome = w.deadline.missed(images: w.share, at: now, policy: deadlines)
            let head = String(format: "worker %@ (rank %d, %@) missed step %d's deadline (%.1f s): its %d images are left out of this step (last answer in time: %@)",
                              w.name, w.rank, w.host, roundStep + 1, allowed, w.share, last)
            switch outcome {
            case .late:
                log.warning("\(head)")
            case let .benched(until):
                let why = "missed \(w.deadline.missesInARow) step deadlines in a row"
                log.warning("\(head); it \(why): no share for \(Int((until - now).rounded())) s, then it is tried again")
                record(.benched, w, reason: why)
            case .dropped:
                let why = "it answered none of its \(w.deadline.missedSteps) steps within their deadlines (last allowed \(String(format: "%.1f", allowed)) s): check its CPU and its link to the coordinator"
                log.warning("\(head); dropped: \(why)")
                w.state = .left
                record(.dropped, w, reason: why)
                let header = FrameHeader(type: .reject, runID: runID, step: UInt64(windowStep), maskVersion: maskVersion, layoutHash: layout.hash)
                _ = try? router.send([identity, Frame(header: header, payload: Payload.reason("dropped from the run: \(why)")).encoded(compress: false)])
            }
        }
    }

    /// Tells a peer why it is refused (at most once a second per peer: a peer that keeps
    /// trying must not make the coordinator send without end).
    func reject(_ identity: [UInt8], _ why: String) {
        let now = clock.seconds
        if let last = lastRejectSent[identity], now - last < 1 { return }
        if lastRejectSent.count > 1000 { lastRejectSent = [:] }
        lastRejectSent[identity] = now
        let name = String(decoding: identity.prefix(64), as: UTF8.self).escapedForLog
        log.warning("refused \(name): \(why.escapedForLog)")
        let header = FrameHeader(type: .reject, runID: runID, step: UInt64(windowStep), maskVersion: maskVersion, layoutHash: layout.hash)
        _ = try? router.send([identity, Frame(header: header, payload: Payload.reason(why)).encoded(compress: false)])
    }

    static func anotherModel(_ ours: UInt64, theirs: UInt64) -> String {
        "this coordinator trains another model (layout \(String(ours, radix: 16)); the worker's is \(String(theirs, radix: 16))): "
            + "the run the worker belonged to is gone; restart the worker to join this one"
    }

    /// Why a frame from a peer that is not in the run is answered with a reject, or nil when
    /// it is not: a frame of another svite version, or of a worker of another model (a
    /// coordinator restarted with a new config on the same port). A frame of another run of
    /// the same model is not answered: its worker joins again by itself (a coordinator
    /// restarted with --auto-resume), and anything that is not an svite frame is only counted.
    static func refusalForStranger(_ error: Error, header: FrameHeader?, layout: UInt64) -> String? {
        if case let .unsupportedVersion(v)? = error as? WireError {
            return "this coordinator speaks svite wire protocol \(FrameHeader.protocolVersion), the worker \(v): run the same svite version on both"
        }
        if let h = header, h.layoutHash != 0, h.layoutHash != layout { return anotherModel(layout, theirs: h.layoutHash) }
        return nil
    }
}
