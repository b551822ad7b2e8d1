import ArgumentParser
import Datasets
import Foundation
import Kernels
import Model
import Pictures
import Training

struct Tokens: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw which patches an SViTE+ model keeps: test images with the removed patches greyed out.",
        discussion: """
        Runs the first --count test images through the model (evaluation mode: the \
        deterministic top-k of the selector's scores) and writes tokens.png, a grid of the \
        images enlarged --scale times with every removed patch washed out to grey and \
        framed (like the paper's Fig. 5), and tokens.json with the kept patch indices.

        Example: svite tokens runs/svite-plus --out runs/svite-plus/tokens
        """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("Checkpoint, run directory or exported weights of a model with a token selector.", valueName: "checkpoint"))
    var checkpoint: String

    @Option(name: .long, help: ArgumentHelp("Output directory (default: tokens/ in the run directory).", valueName: "dir"))
    var out: String?

    @Option(name: .long, help: "Test images to draw.")
    var count: Int = 32

    @Option(name: .long, help: "Pixels per image pixel.")
    var scale: Int = 4

    @Option(name: .long, help: "Images per row.")
    var columns: Int = 8

    func validate() throws {
        guard (1 ... 1024).contains(count) else { throw ValidationError("--count must be between 1 and 1024 (got \(count))") }
        guard (1 ... 32).contains(scale) else { throw ValidationError("--scale must be between 1 and 32 (got \(scale))") }
        guard columns >= 1 else { throw ValidationError("--columns must be at least 1 (got \(columns))") }
    }

    func run() throws {
        _ = global.bootstrap("svite.tokens")
        let w = try LoadedWeights.load(checkpoint)
        let c = w.config
        guard c.model.hasTokenSelector else {
            throw ValidationError("\(w.path) has no token selector (model.token_keep is not set): every patch reaches the blocks")
        }
        try c.checkData()
        let data = try c.data.load(.test)
        let n = min(count, data.count)
        let model = ViTModel(config: c.model)
        let assembler = BatchAssembler(dataset: data, mean: c.data.mean, std: c.data.std, augmentation: .none, seed: 0)
        let images = FloatBuffer(count: n * c.model.imageValues)
        var labels = [Int32](repeating: 0, count: n)
        labels.withUnsafeMutableBufferPointer { lab in
            assembler.fill(images: images.pointer, labels: lab.baseAddress!, indices: (0 ..< Int32(n)).map { $0 }, epoch: 0, augment: false)
        }
        let ws = ViTWorkspace(model: model, batch: n, threads: ProcessInfo.processInfo.activeProcessorCount, training: false)
        let result = labels.withUnsafeBufferPointer { model.forward(params: w.params.pointer, images: images.pointer, labels: $0.baseAddress!, workspace: ws) }
        let k = c.model.keptPatches
        let flat = model.tokenSelection(from: ws).kept.map(Int.init)
        let kept = (0 ..< n).map { Array(flat[($0 * k) ..< (($0 + 1) * k)]) }
        let bytes = data.imageBytes
        let raw = (0 ..< n).map { Array(data.pixels[($0 * bytes) ..< (($0 + 1) * bytes)]) }
        let dir = out ?? "\(Checkpoint.runDirectory(of: w.path))/tokens"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let picture = TokenPictures.grid(images: raw, channels: data.channels, size: c.model.imageSize, patch: c.model.patchSize,
                                         kept: kept, scale: scale, columns: columns)
        try picture.png().write(to: URL(fileURLWithPath: "\(dir)/tokens.png"))
        let info: [String: Any] = ["kept_patches": kept, "patches": c.model.numPatches, "keep": k, "images": n,
                                   "accuracy_on_these": result.accuracy, "source": w.path]
        try JSONSerialization.data(withJSONObject: info, options: [.sortedKeys]).write(to: URL(fileURLWithPath: "\(dir)/tokens.json"))
        print("\(n) images, \(k) of \(c.model.numPatches) patches kept each: \(dir)/tokens.png and tokens.json")
    }
}
