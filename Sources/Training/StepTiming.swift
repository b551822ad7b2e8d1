import Compute
import Config
import Core
import Datasets
import Dispatch
import Foundation
import Kernels
import Model
import Sparsity

/// Times one training step (batch assembly, forward and backward) of several variants'
/// final models against each other in this one process: round by round, each run
/// once per round in a rotating order, so a slow spell of a shared machine hits every
/// run alike. Whole-run wall or CPU seconds cannot compare methods on these machines
/// (the same dense run took 997 and 3,237 CPU seconds on two seeds); this can.
///
/// A structured run's step is its compact model's (what its workers run); an
/// unstructured one's runs its masked layers as `compute.sparse_kernels` chooses (sparse
/// kernels where this machine runs them faster, dense products on the masked weights
/// elsewhere); a token selector's is taken at the end of its temperature and noise schedule.
public struct StepTiming {
    public struct Entry: Sendable {
        public var name: String
        /// Median seconds per step.
        public var seconds: Double
        /// 1 − the median over rounds of this run's time / the reference's in that round.
        public var saving: Double
        public var samples: [Double]
    }

    public var batch: Int
    public var threads: Int
    public var rounds: Int
    public var warmup: Int

    public init(batch: Int, threads: Int, rounds: Int = 15, warmup: Int = 2) {
        self.batch = batch; self.threads = threads; self.rounds = rounds; self.warmup = warmup
    }

    /// `runs`: (name, config) of each variant; `reference` names the one the savings are
    /// against. A step's time depends on the shape of the final topology (kept heads and
    /// neurons, tokens, blocks), not on the trained weights, so each step runs on fresh
    /// weights with a topology at the config's final sparsity: S2ViTE's random heads and
    /// neurons at the budgets for the structured methods (SSP ends with as many), SViTE's
    /// random masks for the unstructured ones. `progress` hears a line per round.
    public func time(runs: [(name: String, config: RunConfig)], reference: String,
                     progress: (String) -> Void = { _ in }) throws -> [Entry] {
        guard let refIndex = runs.firstIndex(where: { $0.name == reference }) else {
            throw CheckpointError(path: "step timing", message: "no variant named '\(reference)' to time the others against")
        }
        let refConfig = runs[refIndex].config
        // Every run's data config is the experiment's; the images are loaded once.
        let data = refConfig.data
        let train = try refConfig.loadData(.train)
        let engine = Engine.configure(backend: refConfig.compute.backend, precision: refConfig.training.precision)
        progress(engine.summary)
        let indices = (0 ..< Int32(min(batch, train.count))).map { $0 }
        let steps: [() -> Void] = runs.map { run in
            let c = run.config
            let model = ViTModel(config: c.model)
            let params = FloatBuffer(count: model.layout.count)
            Initializer.initialize(params, layout: model.layout, seed: 1)
            var final = c.sparsity
            if final.method.isStructured { final.method = .s2vite } else if final.isSparse { final.method = .svite }
            let masks = final.isSparse ? final.makeMethod().initialMasks(model: model, seed: 2) : nil
            masks?.apply(to: params)
            let replica = Replica(model: model,
                                  assembler: BatchAssembler(dataset: train, mean: data.mean, std: data.std,
                                                            augmentation: data.augmentation, seed: c.training.seed),
                                  threads: threads, smoothing: Float(c.training.labelSmoothing), maxBatch: indices.count,
                                  precision: engine.precision, selectorRelaxation: c.training.selectorRelaxation,
                                  selectorObjective: c.training.selectorObjective, sparseKernels: c.compute.sparseKernels)
            let selector = c.selectorSchedule(step: 1, total: 1)
            return {
                replica.computeGradient(params: params.pointer, indices: indices, epoch: 0, masks: masks, selector: selector)
            }
        }
        for _ in 0 ..< warmup { steps.forEach { $0() } }
        var samples = [[Double]](repeating: [], count: runs.count)
        for r in 0 ..< rounds {
            for k in 0 ..< runs.count {
                let i = (k + r) % runs.count
                samples[i].append(Stopwatch.seconds(steps[i]))
            }
            progress("step timing: round \(r + 1) of \(rounds)")
        }
        return runs.indices.map { i in
            let ratios = zip(samples[i], samples[refIndex]).map { $0 / $1 }
            return Entry(name: runs[i].name, seconds: Stopwatch.median(samples[i]), saving: 1 - Stopwatch.median(ratios), samples: samples[i])
        }
    }
}
