import Training
import Core
import Wire

/// The step round's deadlines and the coordinator's refusals: the rules are `StepDeadline`
/// and `DeadlineRecord` (no sockets); this applies them to the round and tells peers why.
extension CoordinatorService {
    /// Takes off the step every worker whose answer is later than its deadline
    /// (`StepDeadline`); one that keeps missing is benched or dropped (`DeadlineRecord`).
    func checkDeadlines(now: Double) {
        guard let round else { return }
        for (w, allowed) in round.overdue(now: now, member: { membership[$0] }, policy: deadlines) {
            round.stopWaiting(for: w.identity)
            round.late.append(w.name)
            // Its speed is measured when the late answer arrives (if it does), not guessed
            // from the miss: a deadline must not grow with each one a worker misses.
            w.missed = (round.step, w.sentAt, w.share)
            let last = w.deadline.lastAnswer.map { String(format: "%.1f s ago", now - $0) } ?? "never"
            let outcome = w.deadline.missed(images: w.share, at: now, policy: deadlines)
            let head = String(format: "worker %@ (rank %d, %@) missed step %d's deadline (%.1f s): its %d images are left out of this step (last answer in time: %@)",
                              w.name, w.rank, w.host, round.step + 1, allowed, w.share, last)
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
                sendReject(w.identity, "dropped from the run: \(why)")
            }
        }
    }

    private func sendReject(_ identity: [UInt8], _ why: String) {
        let header = FrameHeader(type: .reject, runID: runID, step: UInt64(trainer.step), maskVersion: trainer.maskVersion, layoutHash: layout.hash)
        try? sockets.send(Frame(header: header, payload: Payload.reason(why)).encoded(compress: false), to: identity)
    }

    /// Tells a peer why it is refused (at most once a second per peer: a peer that keeps
    /// trying must not make the coordinator send without end).
    func reject(_ identity: [UInt8], _ why: String) {
        let now = clock.seconds
        if let last = refusals.lastRejectSent[identity], now - last < 1 { return }
        if refusals.lastRejectSent.count > 1000 { refusals.lastRejectSent = [:] }
        refusals.lastRejectSent[identity] = now
        let name = String(decoding: identity.prefix(64), as: UTF8.self).escapedForLog
        log.warning("refused \(name): \(why.escapedForLog)")
        sendReject(identity, why)
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
