import Coordinator
import Prometheus

/// The coordinator's status as Prometheus text (exposition format 0.0.4), built afresh for
/// each scrape from the status document, so a worker that left leaves no stale series.
/// The names are listed in docs/monitoring.md.
public enum PrometheusText {
    public static func render(_ d: StatusDocument) -> String {
        let r = PrometheusCollectorRegistry()
        func gauge(_ name: String, _ help: String, _ value: Double?, labels: [(String, String)] = []) {
            guard let value, value.isFinite else { return }
            let descriptor = MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
            let g = r.makeGauge(descriptor: descriptor, labels: labels)
            g.set(value)
        }
        func gauge(_ name: String, _ help: String, _ value: Int?, labels: [(String, String)] = []) {
            gauge(name, help, value.map(Double.init), labels: labels)
        }
        // Running totals since the coordinator started (or the worker joined): counters,
        // named _total, so rate() and increase() apply.
        func counter(_ name: String, _ help: String, _ value: Int?, labels: [(String, String)] = []) {
            guard let value, value >= 0 else { return }
            let c = r.makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "total", helpText: help), labels: labels)
            c.increment(by: Int64(value))
        }
        let run = [("run", d.runId ?? "unknown"), ("config", d.config ?? "unknown")]
        // The state without its counts (waiting is one series, not one per count); the
        // counts are gauges of their own.
        gauge("svite_info", "1, with the run id, config and state (\(StatusDocument.RunPhase.allCases.map(\.rawValue).joined(separator: ", "))) as labels", 1,
              labels: run + [("state", d.state?.rawValue ?? "unknown")])
        if let needed = d.workersNeeded {
            gauge("svite_workers_needed", "Workers the run waits for before it goes on (present while it waits)", needed)
        }
        gauge("svite_step", "Steps done", d.step)
        gauge("svite_total_steps", "Steps the run will make", d.totalSteps)
        gauge("svite_epoch", "Epochs done (fractional)", d.epoch)
        let w = d.window
        gauge("svite_loss", "Training loss (label-smoothed) over the last log window", w?.loss)
        gauge("svite_learning_rate", "Learning rate of the last step", w?.lr)
        gauge("svite_images_per_second", "Training images per second over the last log window", w?.imagesPerSecond)
        gauge("svite_elapsed_seconds", "Training time so far (across resumes; waits for workers left out)", w?.elapsedSeconds)
        gauge("svite_eta_seconds", "Estimated seconds to the end of training", w?.etaSeconds)
        gauge("svite_eval_top1", "Top-1 accuracy (fraction) of the last evaluation", d.lastEval?.accuracy)
        gauge("svite_eval_loss", "Loss of the last evaluation", d.lastEval?.loss)
        gauge("svite_eval_step", "Step of the last evaluation", d.lastEval?.step)
        let b = d.lastStepBytes
        gauge("svite_bytes_up_per_step", "Bytes from the workers in the last step", b?.up)
        gauge("svite_bytes_down_per_step", "Bytes to the workers in the last step", b?.down)
        gauge("svite_bytes_up_ratio_dense_fp32", "Uplink bytes per worker against a dense fp32 exchange", b?.upRatioToDenseFp32)
        gauge("svite_bytes_down_ratio_dense_fp32", "Downlink bytes per worker against a dense fp32 exchange", b?.downRatioToDenseFp32)
        counter("svite_bad_frames", "Frames dropped as malformed since the coordinator started", d.badFrames)
        if let c = d.curve {
            gauge("svite_curve_authorized_keys", "Public keys in the CURVE allow-list directory", c.authorizedKeys.count)
            counter("svite_curve_admitted", "CURVE handshakes let in by the allow-list", c.admitted)
            counter("svite_curve_refused", "CURVE handshakes refused, by why", c.refusedKeys, labels: [("reason", "key not listed")])
            counter("svite_curve_refused", "CURVE handshakes refused, by why", c.refusedHandshakes,
                    labels: [("reason", "handshake (plaintext or wrong coordinator key)")])
        }
        if let s = w?.sparsity {
            gauge("svite_density", "Fraction of the prunable weights active", s.density)
            gauge("svite_active_parameters", "Parameters active (all tensors)", s.activeParameters)
            gauge("svite_flops_saving", "Forward FLOPs saved against the dense model (fraction)", s.flopsSaving)
            gauge("svite_exploration_rate", "Fraction of the weights that have been active at some point", s.explorationRate)
            gauge("svite_mask_version", "Topology updates so far", s.maskVersion)
        }
        let workers = d.workers ?? []
        for state in StatusDocument.WorkerPhase.allCases {
            gauge("svite_workers", "Workers by membership state", workers.filter { $0.state == state }.count, labels: [("state", state.rawValue)])
        }
        let slow = StatusTable.stragglers(workers)
        for w in workers {
            let l = [("worker", w.id), ("host", w.host), ("rank", "\(w.rank)")]
            gauge("svite_worker_ready", "1 while the worker takes part in steps (ready or late; not stuck, lost or left)",
                  w.state.takesPart ? 1 : 0, labels: l)
            counter("svite_worker_missed_steps", "Steps whose deadline the worker missed (its images left out)", w.missedSteps ?? 0, labels: l)
            if let s = w.secondsSinceAnswer {
                gauge("svite_worker_seconds_since_answer", "Seconds since the worker's last answer within the deadline", s, labels: l)
            }
            gauge("svite_worker_images_per_second", "The worker's measured speed", w.imagesPerSecond, labels: l)
            counter("svite_worker_steps", "Steps the worker has answered", w.stepsDone, labels: l)
            gauge("svite_worker_share", "Images of the worker's last share", w.share, labels: l)
            gauge("svite_worker_seconds_since_heard", "Seconds since the worker was last heard", w.secondsSinceHeard, labels: l)
            counter("svite_worker_refused", "Answers of the worker refused (bad frame, NaN, other mask version)", w.refused, labels: l)
            counter("svite_worker_joins", "Times the worker has joined", w.joins, labels: l)
            counter("svite_worker_up_bytes", "Bytes the worker has sent", w.bytesUp, labels: l)
            counter("svite_worker_down_bytes", "Bytes sent to the worker", w.bytesDown, labels: l)
            gauge("svite_worker_straggler", "1 when the worker is below 2/3 of the median speed", slow[w.id] == nil ? 0 : 1, labels: l)
        }
        return r.emitToString()
    }
}
