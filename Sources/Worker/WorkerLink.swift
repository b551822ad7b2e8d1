import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Transport

/// A worker's transport: its DEALER socket to the coordinator, the handshake monitor, and
/// what the connection has seen (drops and returns, joins, the silence it judges by).
/// It belongs to the worker's socket thread.
final class WorkerLink {
    let context: ZMQContext
    let socket: ZMQSocket
    /// The connection's handshakes: one that completes after the worker was welcomed means
    /// a coordinator came back (restarted, or the network did), so the worker joins again
    /// at once instead of after seconds of silence; with CURVE, the refused ones say why
    /// no welcome comes.
    let handshakes: HandshakeMonitor
    /// The connection dropped after the welcome (the coordinator died, or the network).
    var disconnected = false
    /// ... and a new one came up: join again when no step is computing.
    var reconnected = false
    var lastRefusalLog = -Double.infinity
    /// Before the welcome: when the worker last said it hears nothing, and whether any
    /// connection has come up (a coordinator is there) or none has.
    var lastSilenceLog = 0.0
    var handshakeSeen = false
    var lastSent = -Double.infinity
    var lastReceived: Double = 0
    /// The longest wait that ended with a frame arriving (a decaying maximum): a big frame
    /// on a slow link holds back the coordinator's heartbeats behind it, so silence is
    /// judged against it.
    var slowestFrame = 0.0
    var lastJoin = -Double.infinity
    /// Seconds between joins while no welcome comes on a connection that is up: doubles
    /// (a welcome with the weights can take seconds on a slow link, and every join would
    /// bring another), back to 2 s when a connection comes up or a welcome arrives.
    var joinInterval = 2.0
    /// Handshakes that failed while this worker has no CURVE keys and none succeeded.
    var failedHandshakes = 0
    /// Whether the last join left this socket (false: there was no connection to take it).
    var joinWentOut = false

    init(options: WorkerOptions) throws {
        context = try ZMQContext()
        // The routing id is this process's own (name, pid, a random part), so two processes
        // given one --name do not take each other's connection; the coordinator knows the
        // worker by the name in its join and refuses a second live one.
        var rng = SystemRandomNumberGenerator()
        let identity = "\(options.name)#\(getpid())#\(String(rng.next() as UInt32, radix: 16))"
        socket = try ZMQSocket.workerDealer(context, identity: identity, maxMessageBytes: -1, heartbeatMs: 1000)
        if let keys = options.curve { try socket.makeCurveClient(keys) }
        handshakes = try HandshakeMonitor(context, watching: socket, label: "worker", connections: true)
        try socket.connect(options.coordinator)
    }
}
