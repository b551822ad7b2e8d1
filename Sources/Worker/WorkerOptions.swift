import Compute
import Kernels
import Model
import Transport

public struct WorkerOptions: Sendable {
    public var coordinator: String
    /// The id the coordinator knows this worker by; a restarted worker that reuses it takes
    /// over its place.
    public var name: String
    public var threads: Int
    /// With no word from the coordinator for this long, ask to join again. nil: 30 s, or
    /// three of its heartbeat intervals or three times the slowest frame seen, if longer.
    /// A restarted coordinator is noticed at once (the connection drops and comes back);
    /// one that marked this worker lost takes it back when it hears it again. What is left
    /// is a coordinator gone without closing the connection, and a short bound would make
    /// a worker whose step frames take seconds on its link ask to join over and over.
    public var rejoinAfter: Double? = nil
    /// The matrix-product backend, overriding the run config's compute.backend.
    public var backend: BackendChoice?
    /// The masked block layers' kernels, overriding the run config's compute.sparse_kernels.
    public var sparseKernels: SparseKernelMode?
    /// A local worker's parent (`svite train`): when it is gone, the worker leaves.
    public var parentPID: Int32?
    /// CURVE: this worker's key pair and the coordinator's public key (nil: plaintext).
    public var curve: CurveClientKeys?
    public init(coordinator: String, name: String, threads: Int, backend: BackendChoice? = nil) {
        self.coordinator = coordinator; self.name = name; self.threads = threads; self.backend = backend
    }
}

public struct WorkerError: Error, CustomStringConvertible {
    public var message: String
    /// The exit status a worker process ends with: 1, or 75 (EX_TEMPFAIL) when starting it
    /// again would help (its coordinator now trains another model), 78 (EX_CONFIG) when
    /// only changing its flags would (plaintext against a CURVE coordinator).
    public var exitCode: Int32 = 1
    public var description: String { message }
    public init(message: String, exitCode: Int32 = 1) { self.message = message; self.exitCode = exitCode }
}

/// What tests make a worker do that a shipping worker never does (`WorkerNode.init`'s
/// `hooks`; `svite worker` sets `computeDelay` from SVITE_TEST_COMPUTE_DELAY for the
/// launcher checks).
public struct WorkerTestHooks: Sendable {
    /// Keep a CRC-32 of the replica's weights and moments after each update.
    public var recordStateDigests = false
    /// After replaying the update to this step, change one weight (as a bit flip in memory
    /// would), so the next checksum differs and the worker resyncs.
    public var corruptAfterStep: Int?
    /// Each step from `fromStep` on takes `seconds` longer to compute (a straggler, or with
    /// a long delay a compute that is stuck while the socket thread heartbeats).
    public var computeDelay: (seconds: Double, fromStep: Int)?
    /// Each answer waits this long after it is made before it is sent (a slow link: the
    /// coordinator counts it as the wire's time, not compute).
    public var answerDelay: Double?
    public init() {}
}
