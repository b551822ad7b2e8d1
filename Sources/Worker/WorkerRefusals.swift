import Foundation
import Logging
import Transport
import Wire

/// What a worker says when no welcome comes or the coordinator refuses it: the reason and
/// what to do, and the exit status that tells a supervisor whether starting it again helps.
extension WorkerNode {
    /// A worker that is not welcomed hears nothing at all (nobody there, a refused CURVE
    /// key, a plaintext worker at a CURVE coordinator): say what the handshake monitor saw
    /// (every 10 s at most), and after 5 s without a welcome, then every 30 s, what to check.
    func explainMissingWelcome(now: Double, failures: [HandshakeFailure]) throws {
        // Without keys: an explicit mechanism mismatch means the coordinator has CURVE keys,
        // and no retry can succeed (libzmq may not even try again after one). Handshakes
        // closed with no detail (about ten a second at a CURVE coordinator, but also from a
        // proxy with nothing behind it yet) are said, not acted on.
        if options.curve == nil && !link.handshakeSeen {
            let keysNeeded = "start the worker with --secret-key (its key from `svite keygen`) and --coordinator-key (the coordinator's "
                + "public key), and put its public key in the coordinator's --authorized-keys directory"
            if failures.contains(where: \.isMechanismMismatch) {
                throw WorkerError(message: "the coordinator at \(options.coordinator) has CURVE keys and this worker none: \(keysNeeded)", exitCode: 78)
            }
            link.failedHandshakes += failures.count
            if link.failedHandshakes >= 10 && !failures.isEmpty && now - link.lastRefusalLog >= 10 {
                link.lastRefusalLog = now
                let message = "worker \(options.name): \(link.failedHandshakes) link.handshakes with \(options.coordinator) were closed before they completed: "
                    + "a coordinator with CURVE keys does that to a worker without them (then \(keysNeeded)); so does a proxy with nothing listening behind it. Trying again."
                log.error("\(message)")
            }
        }
        if let keys = options.curve, let f = failures.last, now - link.lastRefusalLog >= 10 {
            link.lastRefusalLog = now
            let hint = f.kind == .authentication
                ? "copy this worker's public key (\(keys.pair.publicKey.z85), its NAME.key file) into the coordinator's --authorized-keys directory"
                : "check that --coordinator-key is the coordinator's public key"
            log.error("worker \(options.name): \(f); \(hint). Trying again.")
        }
        guard now >= 5, now - link.lastSilenceLog >= (link.lastSilenceLog == 0 ? 5 : 30) else { return }
        link.lastSilenceLog = now
        log.warning("worker \(options.name): \(Self.silenceHint(endpoint: options.coordinator, seconds: now, connected: link.handshakeSeen, curvePublicKey: options.curve?.pair.publicKey.z85)); still trying")
    }

    /// What to check when no welcome comes: whether a connection ever came up says
    /// whether anything listens there.
    static func silenceHint(endpoint: String, seconds: Double, connected: Bool, curvePublicKey: String?) -> String {
        let waited = String(format: "%.0f s", seconds)
        guard connected else {
            return "no coordinator answers at \(endpoint) after \(waited): is `svite coordinator` (or `svite train`) running there, "
                + "bound to that port (--bind tcp://*:PORT)? Check the host name and port, and that no firewall drops TCP to it"
                + (curvePublicKey == nil ? "; a coordinator with CURVE keys also says nothing to a worker without --secret-key and --coordinator-key" : "")
        }
        if let key = curvePublicKey {
            return "connected to \(endpoint) but no welcome after \(waited): check that --coordinator-key is the coordinator's public key "
                + "and that this worker's public key \(key) is in its --authorized-keys directory; the coordinator's log says why it refused"
        }
        return "connected to \(endpoint) but no welcome after \(waited): the coordinator's log says why it refused this worker "
            + "(another svite version, a name already in use); a coordinator with CURVE keys needs --secret-key and --coordinator-key here"
    }

    /// What a refusal means for this worker, with what to do about it.
    func refusal(_ header: FrameHeader, reason: String) -> WorkerError {
        if let layout = run?.layout, header.layoutHash != 0, header.layoutHash != layout.hash {
            return WorkerError(message: "the coordinator at \(options.coordinator) now trains another model (layout \(String(header.layoutHash, radix: 16)), "
                + "this worker's \(String(layout.hash, radix: 16))): the run this worker belonged to is gone. Start the worker again to join "
                + "the new run (exit status 75: a supervisor does that). The coordinator said: \(reason)", exitCode: 75)
        }
        return WorkerError(message: "the coordinator refused this worker: \(reason)")
    }

    /// A reject frame that fails the checks of a welcomed worker (another run's id or
    /// layout: a new coordinator on the same port) is still read for its reason.
    func rejectReason(_ bytes: [UInt8]) throws -> WorkerError? {
        guard let frame = try? Frame.decode(bytes, limits: FrameLimits(maxRawBytes: 1 << 20)), frame.header.type == .reject else { return nil }
        return refusal(frame.header, reason: (try? Payload.decodeReason(frame.payload)) ?? "?")
    }
}
