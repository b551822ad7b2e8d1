import Core
import Foundation
import Training
import Wire

/// What the service thread does with each frame: a join admitted or refused, a gradient
/// handed to the round, a leave; and how frames go out. A bad frame is counted and dropped
/// (and a stranger told why when telling helps), never the end of the thread.
extension CoordinatorService {
    @discardableResult
    func send(_ type: MessageType, _ payload: [UInt8], to w: WorkerRecord, step: Int) -> Bool {
        let header = FrameHeader(type: type, runID: runID, step: UInt64(step), maskVersion: trainer.maskVersion, layoutHash: layout.hash)
        return sendEncoded(type, Frame(header: header, payload: payload).encoded(compress: options.compress), to: w)
    }

    /// Sends a frame already encoded (the replicated step frame is encoded once for all).
    @discardableResult
    func sendEncoded(_ type: MessageType, _ bytes: [UInt8], to w: WorkerRecord) -> Bool {
        do {
            try sockets.send(bytes, to: w.identity)
            w.bytesDown += bytes.count
            w.lastSent = clock.seconds
            if type == .params { round?.bytesDown += bytes.count }
            return true
        } catch {
            log.warning("worker \(w.name): cannot send \(type): \(error); marking it lost")
            markLost(w, why: "unreachable")
            return false
        }
    }

    func record(_ kind: WorkerEvent.Kind, _ w: WorkerRecord, reason: String? = nil) {
        status.record(WorkerEvent(kind: kind, worker: w.name, host: w.host, rank: w.rank,
                                  time: (Date().timeIntervalSince1970 * 1000).rounded() / 1000, reason: reason))
    }

    func handle(_ parts: [[UInt8]]) {
        guard parts.count == 2 else { return countBad(peer: parts.first ?? [], WireError.malformedPayload("\(parts.count) message parts")) }
        let identity = parts[0], bytes = parts[1]
        let frame: Frame
        do {
            // A join comes before the worker knows the run, so it is checked without the run id.
            frame = try Frame.decode(bytes, limits: limits)
            if membership[identity] == nil && frame.header.type != .join {
                throw WireError.malformedPayload("\(frame.header.type) from a peer that has not joined")
            }
        } catch {
            countBad(peer: identity, error)
            if membership[identity] == nil, let why = Self.refusalForStranger(error, header: Frame.peek(bytes), layout: layout.hash) {
                reject(identity, why)
            }
            return
        }
        if let w = membership[identity] {
            w.lastHeard = clock.seconds
            w.bytesUp += bytes.count
            if w.state == .lost && frame.header.type != .join && frame.header.type != .leave {
                // Silent, not gone: a stopped process continued, or its heartbeats waited
                // behind a big frame on a slow link. It holds what it held; the round
                // sends it whatever it lacks.
                w.state = .ready
                log.info("worker \(w.name) is heard again; it takes part from the next step")
                record(.rejoined, w, reason: "heard again")
            }
        }
        switch frame.header.type {
        case .join:
            admit(identity, frame)
        case .grads:
            gradient(from: identity, frame, bytes: bytes.count)
        case .heartbeat:
            break
        case .leave:
            if let w = membership[identity] {
                let why = (try? Payload.decodeReason(frame.payload)) ?? "?"
                log.info("worker \(w.name) left (\(why))")
                w.state = .left
                record(.left, w, reason: why)
                round?.stopWaiting(for: identity)
            }
        default:
            countBad(peer: identity, WireError.malformedPayload("\(frame.header.type) is not a worker message"))
        }
    }

    private func gradient(from identity: [UInt8], _ frame: Frame, bytes: Int) {
        guard let w = membership[identity], w.state == .ready else { return countBad(peer: identity, WireError.malformedPayload("grads from a worker not in the run")) }
        let step = Int(frame.header.step)
        if let missed = w.missed, missed.step == step {
            // The late answer to a step it missed, also when that step is being tried again
            // under the same number (its share may differ): it tells how slow the worker
            // really is, and is not added.
            w.missed = nil
            w.measured(images: missed.images, seconds: clock.seconds - missed.sentAt)
            log.debug("worker \(w.name): late gradient for step \(step) dropped")
            return
        }
        guard let round, round.active, round.accepts(identity, step: step) else {
            log.debug("worker \(w.name): stale gradient for step \(step) dropped (now \(round?.step ?? -1))")
            return
        }
        // A gradient computed on another topology would land on the wrong weights.
        guard frame.header.maskVersion == trainer.maskVersion else {
            return countBad(peer: identity, WireError.malformedPayload(
                "gradient computed on mask version \(frame.header.maskVersion), the run is at \(trainer.maskVersion)"))
        }
        round.arrived(identity, payload: frame.payload, bytes: bytes, at: clock.seconds)
        addInOrder()
    }

    /// Adds the gradients whose turn has come (`StepRound.addInOrder`); an unusable one is
    /// refused.
    func addInOrder() {
        guard let round, round.active else { return }
        for (identity, error) in round.addInOrder({ membership[$0] }) { countBad(peer: identity, error) }
    }

    func admit(_ identity: [UInt8], _ frame: Frame) {
        let join: JoinMessage
        do {
            join = try Payload.decodeJSON(JoinMessage.self, frame.payload)
        } catch {
            countBad(peer: identity, error)
            return reject(identity, "the join could not be read (\(error)): is this an svite worker of the same version?")
        }
        guard frame.header.layoutHash == layout.hash || frame.header.layoutHash == 0 else {
            let error = WireError.wrongLayout(expected: layout.hash, found: frame.header.layoutHash)
            countBad(peer: identity, error)
            return reject(identity, Self.anotherModel(layout.hash, theirs: frame.header.layoutHash))
        }
        if let problem = join.problem {
            countBad(peer: identity, WireError.malformedPayload("join refused: \(problem)"))
            return reject(identity, problem)
        }
        let record: WorkerRecord, isNew: Bool
        switch membership.admit(identity, join: join, now: clock.seconds, aliveWithin: max(2 * options.heartbeatSeconds, 1)) {
        case let .admitted(r, fresh):
            (record, isNew) = (r, fresh)
        case let .refused(why):
            countBad(peer: identity, WireError.malformedPayload("join refused: \(why)"))
            return reject(identity, why)
        }
        round?.stopWaiting(for: identity)
        // A restart under the same name replaced an older connection: the round stops
        // waiting for that one too.
        for old in membership.all where old.name == join.name && old.identity != identity && old.state == .left {
            round?.stopWaiting(for: old.identity)
        }
        if isNew {
            // handle() counts the bytes of known workers' frames; a new one's join is counted here.
            record.bytesUp += FrameHeader.size + frame.payload.count
            log.info("worker \(join.name) joined from \(join.host) (pid \(join.pid), \(join.threads) threads) as rank \(record.rank)")
            self.record(.joined, record)
        } else {
            log.info("worker \(join.name) rejoined from \(join.host) (pid \(join.pid))")
            self.record(.rejoined, record)
        }
        _ = send(.welcome, welcomePayload(for: record), to: record, step: trainer.step)
    }

    func markLost(_ w: WorkerRecord, why: String) {
        guard w.state == .ready else { return }
        w.state = .lost
        record(.lost, w, reason: why)
        round?.stopWaiting(for: w.identity)
        log.warning("worker \(w.name) (rank \(w.rank), \(w.host)) lost: \(why); continuing with \(membership.live.count) worker(s)")
    }

    func countBad(peer: [UInt8], _ error: Error) {
        // A peer that has not joined is named by its routing id, which it chose: escaped.
        let name = membership[peer]?.name ?? String(decoding: peer.prefix(64), as: UTF8.self).escapedForLog
        refusals.total += 1
        if let round, round.active, round.pending.contains(peer) {
            // The step's own worker answered with something unusable: it will not send
            // another, so the step goes on without its share instead of waiting for it.
            round.refuse(peer, name: name, error)
            refusals.last = round.lastRefusal
            membership[peer]?.refused += 1
            log.warning("worker \(name): its answer to step \(round.step) was refused (\(error)); the step goes on with the other workers")
        }
        let n = refusals.byPeer[name, default: 0] + 1
        refusals.byPeer[name] = n
        if n == 1 { log.warning("bad frame from \(name.isEmpty ? "<anonymous>" : name) dropped: \(error) (further ones from this peer are counted, not logged)") }
    }
}
