import ArgumentParser
import Compute
import Config
import Datasets
import Foundation
import Kernels
import Model
import Training

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluate weights on the test split and print JSON (accuracy, loss).",
        discussion: """
        PATH is a checkpoint, a run directory (its newest checkpoint) or a safetensors file. \
        Checkpoints and files written by `svite export` carry their config; for other \
        safetensors files give --config.

        Example: svite eval runs/default | jq .accuracy
        """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var configOptions: ConfigOptions
    @OptionGroup var threading: ThreadOptions

    @Argument(help: ArgumentHelp("Checkpoint, run directory or safetensors file.", valueName: "path"))
    var path: String

    @Option(name: .long, help: "Images per forward pass.")
    var batch: Int = 500

    @Option(name: .long, help: "Matrix-product backend: auto, onednn or openblas.")
    var backend: BackendChoice = .auto

    @Option(name: .long, help: "Matrix-product precision (fp32 gives the model's exact accuracy; bf16 what a bf16 run sees).")
    var precision: Precision = .fp32

    @Option(name: .long, help: "Masked block layers on sparse kernels: auto (per layer, whichever this machine runs faster), on or off (default: the run config's compute.sparse_kernels).")
    var sparseKernels: SparseKernelMode?

    @Option(name: .long, help: "Split to evaluate: test or train.")
    var split: String = "test"

    func validate() throws {
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1 (got \(batch))") }
        guard Split(rawValue: split) != nil else { throw ValidationError("--split must be test or train (got '\(split)')") }
    }

    func run() throws {
        let log = global.bootstrap("svite.eval")
        let engine = Engine.configure(backend: backend, precision: precision)
        Engine.log(engine, to: log)
        let explicit = try configOptions.config.map { try RunConfig.resolve($0, overrides: configOptions.overrides) }
        let weights = try LoadedWeights.load(path, config: explicit, overrides: configOptions.overrides)
        let r = try weights.evaluate(split: Split(rawValue: split)!, threads: threading.threads, batch: batch, precision: engine.precision,
                                       sparseKernels: sparseKernels, log: log)
        var out: [String: Any] = ["path": weights.path, "config": weights.config.name, "split": split,
                                  "images": r.images, "accuracy": r.accuracy, "loss": r.loss, "seconds": r.seconds,
                                  "dataset": weights.config.data.kind.rawValue]
        if let s = weights.step { out["step"] = s }
        if let sp = weights.sparsityReport { out.merge(sp.fields) { $1 } }
        let data = try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a checkpoint's weights as timm-named safetensors plus a JSON of the model config.",
        discussion: """
        The .safetensors file holds timm's VisionTransformer state-dict keys (float32), so \
        `model.load_state_dict(safetensors.torch.load_file(F))` works on a \
        `timm.models.VisionTransformer(**json["timm_kwargs"])`. The JSON beside it (same \
        name, .json) gives the model shape, the timm keyword arguments and the input \
        normalisation. An SViTE+ model adds its token_selector.* tensors, which timm does \
        not have (load with strict=False; the JSON says how the selector works).

        With --compact (structured runs: s2vite, ssp) the file holds only the kept heads and \
        MLP neurons as physically smaller tensors; its JSON has no timm_kwargs (timm's \
        VisionTransformer has one head count and width for all blocks) but each block's head \
        count and MLP width (compact.block_heads, block_hidden) and which heads and neurons \
        survive, and `svite eval` runs it with the masked model's accuracy.

        Example: svite export runs/default --out fmnist-vit.safetensors
        """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("Checkpoint or run directory (its newest checkpoint).", valueName: "checkpoint"))
    var checkpoint: String

    @Option(name: .long, help: ArgumentHelp("Output file (default: model.safetensors in the run directory).", valueName: "file"))
    var out: String?

    @Flag(name: .long, help: "Structured runs: write the compact model (kept heads and neurons only).")
    var compact = false

    func run() throws {
        _ = global.bootstrap("svite.export")
        let weights = try LoadedWeights.load(checkpoint)
        let target = out ?? "\(Checkpoint.runDirectory(of: weights.path))/model.safetensors"
        let json = try weights.export(to: target, compact: compact)
        print("weights: \(target)\nconfig:  \(json)")
    }
}
