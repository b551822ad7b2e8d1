import Core
import Foundation

/// The `data:` section of a run config.
public struct DataConfig: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case fashionMNIST = "fashion-mnist"
        case mnist
        case cifar10
        /// A folder of class folders of JPEG/PNG files (`train/`, `val/`), read as
        /// torchvision's ImageFolder does; the model says the size and channels.
        case imageFolder = "image-folder"

        /// The classes' names in label order (the data sets' own documentation; an image
        /// folder's are its folder names, which the loaded data set carries).
        public var classNames: [String] {
            switch self {
            case .imageFolder: []
            case .fashionMNIST: ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
            case .mnist: (0 ..< 10).map(String.init)
            case .cifar10: ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
            }
        }
    }

    public struct Augmentation: Sendable, Equatable, Codable {
        /// Zero padding on each side before a random crop back to the image size; 0 = no crop.
        public var cropPadding: Int
        public var horizontalFlip: Bool
        /// torchvision's RandomResizedCrop: a random part of the picture (area fraction in
        /// `scale`, aspect ratio log-uniform in `ratio`) resized to the model's size.
        public var randomResizedCrop: ResizedCrop?
        /// timm's Mixup (`mixup_alpha`) and CutMix (`cutmix_alpha`): λ ~ Beta(α, α); 0: off.
        public var mixup: Double = 0
        public var cutmix: Double = 0
        /// timm's `mixup_prob`: the share of images mixed at all; `switch_prob`: with both
        /// on, the share of mixed images that take CutMix.
        public var mixProbability: Double = 1
        public var mixSwitchProbability: Double = 0.5
        public var mixes: Bool { mixup > 0 || cutmix > 0 }
        /// TrivialAugment (torchvision's TrivialAugmentWide) after the crop and flip.
        public var trivialAugment = false
        public static let none = Augmentation(cropPadding: 0, horizontalFlip: false)
        public var isNone: Bool { cropPadding == 0 && !horizontalFlip && randomResizedCrop == nil && !mixes && !trivialAugment }
        public init(cropPadding: Int, horizontalFlip: Bool, randomResizedCrop: ResizedCrop? = nil) {
            self.cropPadding = cropPadding; self.horizontalFlip = horizontalFlip; self.randomResizedCrop = randomResizedCrop
        }
    }

    /// `augmentation.random_resized_crop`: timm's defaults are scale 0.08…1, ratio 3/4…4/3.
    public struct ResizedCrop: Sendable, Equatable, Codable {
        public var scale: ClosedRange<Double>
        public var ratio: ClosedRange<Double>
        public static let timm = ResizedCrop(scale: 0.08 ... 1, ratio: 0.75 ... 4.0 / 3)
        public init(scale: ClosedRange<Double>, ratio: ClosedRange<Double>) { self.scale = scale; self.ratio = ratio }
    }

    public var kind: Kind
    public var directory: String
    /// Per-channel mean and standard deviation of pixel/255.
    public var mean: [Double]
    public var std: [Double]
    public var augmentation: Augmentation
    /// Use only the first N images of a split (0 = all): for smoke runs and tests.
    public var trainLimit: Int
    public var testLimit: Int
    /// Image folders: timm's crop_pct (evaluation resizes the shorter side to
    /// ⌊size / crop_pct⌋ and takes the central size×size).
    public var cropFraction: Double = 0.875
    /// Image folders: decode the next batch's pictures on a background thread while the
    /// step computes (off: every picture is decoded when its batch is assembled).
    public var prefetch = true

    public init(kind: Kind = .fashionMNIST, directory: String? = nil, mean: [Double]? = nil, std: [Double]? = nil,
                augmentation: Augmentation = .none, trainLimit: Int = 0, testLimit: Int = 0) {
        self.kind = kind
        self.directory = directory ?? kind.defaultDirectory
        self.mean = mean ?? kind.defaultMean
        self.std = std ?? kind.defaultStd
        self.augmentation = augmentation
        self.trainLimit = trainLimit
        self.testLimit = testLimit
    }

    /// Loads one split, with the limit applied. `channels` and `size`: what the model takes
    /// (an image folder's pictures are turned into it; the other data sets are checked
    /// against it by `RunConfig.checkData`).
    public func load(_ split: Split, channels: Int? = nil, size: Int? = nil) throws -> ImageDataset {
        let d = directory
        let set: ImageDataset
        switch kind {
        case .imageFolder:
            guard let channels, let size else { throw DataError(file: d, problem: "an image folder needs the model's channels and size to be loaded") }
            // The evaluation split is labelled by the training split's classes.
            // (Only the class folders' names: listing ImageNet's 1.28 M training files to
            // evaluate would take seconds.)
            let classes = split == .train ? nil : try ImageFolder.classes(in: try ImageFolder.splitDirectory(root: d, split: .train))
            let scan = try ImageFolder.scan(root: d, split: split, classes: classes)
            let files = ImageFolderFiles(root: d, paths: scan.paths, channels: channels, size: size, cropFraction: cropFraction)
            return ImageDataset(name: "\((d as NSString).lastPathComponent)/\(split.rawValue)", files: files, labels: scan.labels,
                                classNames: scan.classes).prefix(split == .train ? trainLimit : testLimit)
        case .fashionMNIST, .mnist:
            let prefix = split == .train ? "train" : "t10k"
            set = try DatasetReader.idx(images: try locate(d, "\(prefix)-images-idx3-ubyte"),
                                        labels: try locate(d, "\(prefix)-labels-idx1-ubyte"),
                                        name: "\(kind.rawValue)/\(split.rawValue)")
        case .cifar10:
            let names = split == .train ? (1 ... 5).map { "data_batch_\($0).bin" } : ["test_batch.bin"]
            set = try DatasetReader.cifar10(files: try names.map { try locate(d, $0) }, name: "cifar10/\(split.rawValue)")
        }
        if set.height != kind.imageSize || set.width != kind.imageSize {
            throw DataError(file: d, problem: "\(kind.rawValue) images should be \(kind.imageSize)×\(kind.imageSize), found \(set.height)×\(set.width)")
        }
        return set.prefix(split == .train ? trainLimit : testLimit)
    }

    /// The file, or its `.gz`, in `dir`; the error says how to get it.
    func locate(_ dir: String, _ name: String) throws -> String {
        let fm = FileManager.default
        for candidate in ["\(dir)/\(name)", "\(dir)/\(name).gz"] where fm.fileExists(atPath: candidate) {
            return candidate
        }
        throw DataError(file: "\(dir)/\(name)[.gz]", problem: "no such file", remedy: kind.howToGet(directory: dir))
    }
}

extension DataConfig: ConfigSection {
    public static let sectionName = "data"
    public static var defaults: DataConfig { DataConfig() }

    public static var keys: [ConfigKey<DataConfig>] {
        [
            // The data set comes first: it sets the defaults of dir, mean and std.
            ConfigKey("dataset", read: { m, c in
                guard let text = try m.string("dataset") else { return }
                guard let kind = Kind(rawValue: text) else {
                    throw m.error("dataset", "unknown data set '\(text)'; known: \(Kind.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                c = DataConfig(kind: kind)
            }, write: { $0.kind.rawValue }),
            .value("dir", \.directory),
            .value("mean", \.mean),
            .value("std", \.std, check: { list in list.first(where: { !($0 > 0) }).map { "every value must be positive, found \($0)" } }),
            ConfigKey("augmentation", read: { m, c in
                if m.isMapping("augmentation") {
                    let a = try m.mapping("augmentation")!
                    c.augmentation = Augmentation(cropPadding: try a.int("random_crop_padding") ?? 0,
                                                  horizontalFlip: try a.bool("horizontal_flip") ?? false)
                    if try a.bool("random_resized_crop") == true {
                        var crop = ResizedCrop.timm
                        func range(_ key: String, _ lowest: Double) throws -> ClosedRange<Double>? {
                            guard let v = try a.doubles(key) else { return nil }
                            guard v.count == 2, v[0] > lowest, v[0] <= v[1] else {
                                throw a.error(key, "expected [low, high] with \(lowest) < low <= high, got \(v)")
                            }
                            return v[0] ... v[1]
                        }
                        if let r = try range("crop_scale", 0) {
                            guard r.upperBound <= 1 else { throw a.error("crop_scale", "is a fraction of the picture's area: at most 1, got \(r.upperBound)") }
                            crop.scale = r
                        }
                        if let r = try range("crop_ratio", 0) { crop.ratio = r }
                        c.augmentation.randomResizedCrop = crop
                    } else {
                        for key in ["crop_scale", "crop_ratio"] where a.has(key) {
                            throw a.error(key, "applies to random_resized_crop, which is not on (set random_resized_crop: true)")
                        }
                    }
                    c.augmentation.trivialAugment = try a.bool("trivial_augment") ?? false
                    for (key, path) in [("mixup", \Augmentation.mixup), ("cutmix", \Augmentation.cutmix)] {
                        guard let v = try a.double(key) else { continue }
                        guard v >= 0 && v.isFinite else { throw a.error(key, "is Beta(α, α)'s α: >= 0 (0 is off), got \(v)") }
                        c.augmentation[keyPath: path] = v
                    }
                    for (key, path) in [("mix_prob", \Augmentation.mixProbability), ("mix_switch_prob", \Augmentation.mixSwitchProbability)] {
                        guard let v = try a.double(key) else { continue }
                        guard v >= 0 && v <= 1 else { throw a.error(key, "is a probability: in [0, 1], got \(v)") }
                        c.augmentation[keyPath: path] = v
                    }
                    try a.finish()
                    if c.augmentation.cropPadding < 0 {
                        throw a.error("random_crop_padding", "must be >= 0, got \(c.augmentation.cropPadding)")
                    }
                    if c.augmentation.cropPadding > 0 && c.augmentation.randomResizedCrop != nil {
                        throw a.error("random_crop_padding", "and random_resized_crop are two crops: choose one")
                    }
                } else if let text = try m.string("augmentation") {
                    guard text == "none" else {
                        throw m.error("augmentation", "expected 'none' or a mapping with random_crop_padding and horizontal_flip, found '\(text)'")
                    }
                    c.augmentation = .none
                }
            }, write: { c in
                let a = c.augmentation
                guard !a.isNone else { return "none" }
                var text = "\n    random_crop_padding: \(a.cropPadding)\n    horizontal_flip: \(a.horizontalFlip)"
                if let r = a.randomResizedCrop {
                    text += "\n    random_resized_crop: true\n    crop_scale: [\(r.scale.lowerBound), \(r.scale.upperBound)]\n    crop_ratio: [\(r.ratio.lowerBound), \(r.ratio.upperBound)]"
                }
                if a.trivialAugment { text += "\n    trivial_augment: true" }
                if a.mixes {
                    text += "\n    mixup: \(a.mixup)\n    cutmix: \(a.cutmix)\n    mix_prob: \(a.mixProbability)\n    mix_switch_prob: \(a.mixSwitchProbability)"
                }
                return text
            }),
            .value("prefetch", \.prefetch),
            .value("crop_pct", \.cropFraction, check: { $0 > 0 && $0 <= 1 ? nil : "must be in (0, 1] (timm's crop_pct: the centre crop's share of the resized picture), got \($0)" }),
            .value("train_limit", \.trainLimit, check: { $0 >= 0 ? nil : "must be >= 0 (0 means all), got \($0)" }),
            .value("test_limit", \.testLimit, check: { $0 >= 0 ? nil : "must be >= 0 (0 means all), got \($0)" }),
        ]
    }

    public func check(_ m: ConfigMapping) throws {
        // An image folder has the model's channels (RunConfig.checkData checks them).
        guard kind != .imageFolder else { return }
        for (key, list) in [("mean", mean), ("std", std)] where list.count != kind.channels {
            throw m.error(key, "\(kind.rawValue) has \(kind.channels) channel(s), found \(list.count) value(s)")
        }
    }
}

extension DataConfig.Kind {
    /// The fixed shape of a built-in data set (an image folder takes the model's size and
    /// channels, and has the classes of its folders).
    public var channels: Int { self == .cifar10 || self == .imageFolder ? 3 : 1 }
    public var imageSize: Int { self == .cifar10 ? 32 : 28 }
    public var classes: Int { 10 }

    public var defaultDirectory: String {
        switch self {
        case .fashionMNIST: return "/usr/share/datasets/fashion-mnist"
        case .mnist: return "data/mnist"
        case .cifar10: return "data/cifar-10-batches-bin"
        case .imageFolder: return "data/images"
        }
    }

    public var defaultMean: [Double] {
        switch self {
        case .fashionMNIST: return [0.2860]
        case .mnist: return [0.1307]
        case .cifar10: return [0.4914, 0.4822, 0.4465]
        case .imageFolder: return [0.485, 0.456, 0.406]  // ImageNet's, as timm
        }
    }

    public var defaultStd: [Double] {
        switch self {
        case .fashionMNIST: return [0.3530]
        case .mnist: return [0.3081]
        case .cifar10: return [0.2470, 0.2435, 0.2616]
        case .imageFolder: return [0.229, 0.224, 0.225]
        }
    }

    func howToGet(directory: String) -> String {
        switch self {
        case .fashionMNIST:
            return "Fashion-MNIST comes with the Debian package dataset-fashion-mnist: run `bash deploy/setup.sh` (as root or with sudo), or point data.dir at a folder holding the four IDX files"
        case .mnist:
            return "Download train-/t10k-images-idx3-ubyte.gz and train-/t10k-labels-idx1-ubyte.gz from http://yann.lecun.com/exdb/mnist/ into \(directory), or set data.dir"
        case .cifar10:
            return "Download cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, unpack it so \(directory) holds data_batch_1.bin … test_batch.bin, or set data.dir"
        case .imageFolder:
            return "Set data.dir to a folder holding train/ and val/, each with one folder of JPEG or PNG files per class"
        }
    }
}
