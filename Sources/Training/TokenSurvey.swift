import Core
import Datasets
import Foundation
import Model

/// SViTE+: which patches a trained selector keeps on the first images of a data set, in
/// evaluation mode (the deterministic top-k of its scores), and the top-1 with that
/// selection. What `svite tokens` draws and measures.
public struct TokenSurvey {
    /// Per image, the kept patch indices, ascending.
    public var kept: [[Int]]
    /// Top-1 over the surveyed images.
    public var accuracy: Double
    /// Per image, the predicted class (with this selection) and the true one.
    public var predicted: [Int]
    public var labels: [Int]

    /// The first `count` images of `dataset` through `model` with `params`, in batches of
    /// at most `batch` so that a long survey does not need one huge workspace.
    public init(model: ViTModel, params: UnsafePointer<Float>, dataset: ImageDataset, mean: [Double], std: [Double],
                count: Int, batch: Int = 256, threads: Int) {
        precondition(model.config.hasTokenSelector, "TokenSurvey: the model has no token selector")
        let n = min(count, dataset.count), chunk = max(1, min(n, batch)), k = model.config.keptPatches
        let classes = model.config.numClasses
        let assembler = BatchAssembler(dataset: dataset, mean: mean, std: std, augmentation: .none, seed: 0)
        let ws = ViTWorkspace(model: model, batch: chunk, threads: threads, training: false)
        let images = FloatBuffer(count: chunk * model.config.imageValues), logits = FloatBuffer(count: chunk * classes)
        var labels = [Int32](repeating: 0, count: chunk)
        var kept: [[Int]] = [], correct = 0
        var predicted: [Int] = [], truth: [Int] = []
        for start in stride(from: 0, to: n, by: chunk) {
            // The last batch wraps round to fill the workspace; only its first `valid` rows count.
            let valid = min(chunk, n - start)
            labels.withUnsafeMutableBufferPointer { lab in
                assembler.fill(images: images.pointer, labels: lab.baseAddress!,
                               indices: (start ..< start + chunk).map { Int32($0 % n) }, epoch: 0, augment: false)
            }
            labels.withUnsafeBufferPointer { lab in
                _ = model.forward(params: params, images: images.pointer, labels: lab.baseAddress!, workspace: ws)
                model.copyLogits(from: ws, into: logits.pointer)
                correct += Metrics.correct(logits: logits.pointer, labels: lab.baseAddress!, rows: valid, classes: classes)
            }
            for i in 0 ..< valid {
                let row = logits.pointer + i * classes
                predicted.append((0 ..< classes).max { row[$0] < row[$1] } ?? 0)
                truth.append(Int(labels[i]))
            }
            let flat = model.tokenSelection(from: ws).kept
            kept += (0 ..< valid).map { i in flat[(i * k) ..< ((i + 1) * k)].map(Int.init) }
        }
        self.kept = kept
        self.predicted = predicted
        self.labels = truth
        accuracy = n > 0 ? Double(correct) / Double(n) : 0
    }
}
