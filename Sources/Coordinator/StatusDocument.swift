import Core
import Foundation
import Training

/// What the status socket answers: one typed record shared by the coordinator (writer),
/// `svite status` (reader) and the tests. JSON keys are the fields in snake_case; values a
/// run has not reached yet are absent, and non-finite numbers travel as "nan"/"inf".
public struct StatusDocument: Codable, Sendable, Equatable {
    /// The run id in hex (named so that its snake_case key, run_id, maps back).
    public var runId: String?
    public var endpoint: String?
    public var config: String?
    public var model: String?
    public var state: RunPhase?
    /// While the run waits for workers: how many have joined and how many it needs to go on.
    public var workersConnected: Int?
    public var workersNeeded: Int?
    public var parameters: Int?
    public var runDirectory: String?
    public var step: Int?
    public var totalSteps: Int?
    public var stepsPerEpoch: Int?
    /// Steps and epochs done, as the rounds finish (the window's figures come per log window).
    public var epoch: Double?
    /// The last log window: the run's one progress record (`StepReport`), as metrics.jsonl
    /// has it too.
    public var window: StepReport?
    /// The last evaluation.
    public var lastEval: EvalReport?
    public var lastCheckpoint: String?
    /// Bytes of the last step (a round), and their ratio to a dense fp32 exchange.
    public var lastStepBytes: StepBytes?
    public var badFrames: Int?
    /// Present when the coordinator runs CURVE.
    public var curve: CurveStatus?
    public var workers: [WorkerStatus]?

    public init() {}

    /// Bytes of one step, and per worker against a dense fp32 exchange (every parameter
    /// down and every gradient up).
    public struct StepBytes: Codable, Sendable, Equatable {
        public var up: Int
        public var down: Int
        public var upRatioToDenseFp32: Double
        public var downRatioToDenseFp32: Double
    }

    /// Where a worker stands.
    public enum WorkerPhase: String, Codable, Sendable, CaseIterable {
        /// Takes part in steps.
        case ready
        /// Missed its last step's deadline; still takes part.
        case late
        /// Benched after missing several in a row: no share until it is tried again.
        case stuck
        case lost, left
        /// Given shares (ready or late).
        public var takesPart: Bool { self == .ready || self == .late }
        /// In the run (not lost or left).
        public var joined: Bool { takesPart || self == .stuck }
    }

    /// The state as people read it: "waiting for workers (1/2)".
    public var stateText: String {
        guard let state else { return "?" }
        guard state == .waiting else { return state.rawValue }
        return "waiting for workers" + (workersNeeded.map { " (\(workersConnected ?? 0)/\($0))" } ?? "")
    }

    /// What the run is doing.
    public enum RunPhase: String, Codable, Sendable, CaseIterable {
        case starting, waiting, training, evaluating
    }

    public struct CurveStatus: Codable, Sendable, Equatable {
        /// Names of the admitted public keys (files in the allow-list directory).
        public var authorizedKeys: [String]
        public var admitted: Int
        /// CURVE handshakes with a key not in the allow-list.
        public var refusedKeys: Int
        /// Handshakes refused before the key was looked at: plaintext, wrong coordinator key.
        public var refusedHandshakes: Int
        public var lastRefusal: String?
        /// Whether the status socket also requires CURVE (it does unless bound to loopback).
        public var statusSocketCurve: Bool
    }

    /// One worker as membership knows it.
    public struct WorkerStatus: Codable, Sendable, Equatable {
        public var id: String
        public var rank: Int
        public var host: String
        public var pid: Int
        public var threads: Int
        public var state: WorkerPhase
        public var secondsSinceHeard: Double
        public var stepsDone: Int
        /// Answers to a step refused (bad frame, NaN values, another mask version).
        public var refused: Int
        public var joins: Int
        /// Images of its last share, and its measured speed.
        public var share: Int
        public var imagesPerSecond: Double
        public var bytesUp: Int
        public var bytesDown: Int
        /// Seconds since its last answer within the deadline (absent: none yet).
        public var secondsSinceAnswer: Double? = nil
        /// Steps it missed the deadline of, and their images.
        public var missedSteps: Int? = nil
        public var missedImages: Int? = nil
    }

    public static func encoder() -> JSONEncoder { RecordCoding.encoder() }
    public static func decoder() -> JSONDecoder { RecordCoding.decoder() }

    public func encoded() -> Data { (try? Self.encoder().encode(self)) ?? Data("{}".utf8) }

    public static func decode(_ data: Data) throws -> StatusDocument { try decoder().decode(StatusDocument.self, from: data) }
}
