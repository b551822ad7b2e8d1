import Foundation
import Training

/// The run as the status socket describes it, kept up to date from the training events.
public final class RunStatus: @unchecked Sendable {
    let lock = NSLock()
    var doc: [String: Any] = [:]
    let denseBytesPerWorker: Int

    public init(config: RunConfig, parameters: Int) {
        denseBytesPerWorker = 4 * parameters
        doc = ["config": config.name, "model": config.model.description, "state": "starting",
               "parameters": parameters, "step": 0]
    }

    public func observe(_ event: TrainingEvent) {
        lock.lock(); defer { lock.unlock() }
        switch event {
        case .started(let p):
            doc["state"] = "training"
            doc["total_steps"] = p.totalSteps
            doc["steps_per_epoch"] = p.stepsPerEpoch
            doc["run_directory"] = p.runDirectory
        case .step(let r):
            doc["step"] = r.step
            doc["epoch"] = r.epoch
            doc["loss"] = r.loss
            doc["lr"] = r.lr
            doc["images_per_second"] = r.imagesPerSecond
            doc["eta_seconds"] = r.etaSeconds
            doc["elapsed_seconds"] = r.elapsedSeconds
            if let sp = r.sparsity { doc.merge(sp.fields) { $1 } }
        case .evaluating:
            doc["state"] = "evaluating"
        case .evaluated(let e):
            doc["state"] = "training"
            doc["eval_accuracy"] = e.accuracy
            doc["eval_loss"] = e.loss
            doc["eval_step"] = e.step
        case .checkpointed(let path, _):
            doc["last_checkpoint"] = path
        }
    }

    /// Bytes of the last step, and their ratio to a dense fp32 exchange (every parameter
    /// down and every gradient up, per worker).
    public func recordBytes(up: Int, down: Int, workers: Int) {
        lock.lock(); defer { lock.unlock() }
        doc["bytes_up_per_step"] = up
        doc["bytes_down_per_step"] = down
        let dense = max(1, denseBytesPerWorker * max(workers, 1))
        doc["bytes_up_ratio_to_dense_fp32"] = Double(up) / Double(dense)
        doc["bytes_down_ratio_to_dense_fp32"] = Double(down) / Double(dense)
    }

    public func set(_ key: String, _ value: Any) { lock.lock(); doc[key] = value; lock.unlock() }

    public var document: [String: Any] { lock.lock(); defer { lock.unlock() }; return doc }
}
