import Config
import Foundation
import Training

/// The run as the status socket describes it, kept up to date from the training events.
public final class RunStatus: @unchecked Sendable {
    let lock = NSLock()
    var doc = StatusDocument()
    let denseBytesPerWorker: Int

    public init(config: RunConfig, parameters: Int) {
        denseBytesPerWorker = 4 * parameters
        doc.config = config.name
        doc.model = config.model.description
        doc.state = .starting
        doc.parameters = parameters
        doc.step = 0
    }

    public func observe(_ event: TrainingEvent) {
        lock.lock(); defer { lock.unlock() }
        switch event {
        case .started(let p):
            doc.state = .training
            doc.totalSteps = p.totalSteps
            doc.stepsPerEpoch = p.stepsPerEpoch
            doc.runDirectory = p.runDirectory
        case .waiting(let connected, let needed):
            doc.state = .waiting
            doc.workersConnected = connected
            doc.workersNeeded = needed
        case .ready:
            doc.state = .training
            doc.workersConnected = nil
            doc.workersNeeded = nil
        case .advanced(let step):
            if doc.state == .waiting || doc.state == nil { doc.state = .training }
            doc.workersConnected = nil
            doc.workersNeeded = nil
            if step > (doc.step ?? 0) {
                doc.step = step
                if let perEpoch = doc.stepsPerEpoch, perEpoch > 0 { doc.epoch = Double(step) / Double(perEpoch) }
            }
        case .step(let r):
            doc.step = r.step
            doc.epoch = r.epoch
            doc.window = r
        case .evaluating:
            doc.state = .evaluating
        case .evaluated(let e):
            doc.state = .training
            doc.lastEval = e
        case .checkpointed(let path, _):
            doc.lastCheckpoint = path
        }
    }

    /// A step's gradients are all in (`completed` steps done): the header follows the
    /// rounds as the worker rows do, not only the log windows.
    public func recordStepDone(_ completed: Int) {
        lock.lock(); defer { lock.unlock() }
        guard completed > (doc.step ?? 0) else { return }
        doc.step = completed
        if let perEpoch = doc.stepsPerEpoch, perEpoch > 0 { doc.epoch = Double(completed) / Double(perEpoch) }
    }

    /// Bytes of the last step, and their ratio to a dense fp32 exchange (every parameter
    /// down and every gradient up, per worker).
    public func recordBytes(up: Int, down: Int, workers: Int) {
        lock.lock(); defer { lock.unlock() }
        let dense = max(1, denseBytesPerWorker * max(workers, 1))
        doc.lastStepBytes = .init(up: up, down: down, upRatioToDenseFp32: Double(up) / Double(dense),
                                  downRatioToDenseFp32: Double(down) / Double(dense))
    }

    public var document: StatusDocument { lock.lock(); defer { lock.unlock() }; return doc }
}
