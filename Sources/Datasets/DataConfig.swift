import Core
import Foundation

/// The `data:` section of a run config.
public struct DataConfig: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case fashionMNIST = "fashion-mnist"
        case mnist
        case cifar10

        /// The classes' names in label order (the data sets' own documentation).
        public var classNames: [String] {
            switch self {
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
        public static let none = Augmentation(cropPadding: 0, horizontalFlip: false)
        public var isNone: Bool { cropPadding == 0 && !horizontalFlip }
        public init(cropPadding: Int, horizontalFlip: Bool) {
            self.cropPadding = cropPadding; self.horizontalFlip = horizontalFlip
        }
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

    /// Loads one split, with the limit applied.
    public func load(_ split: Split) throws -> ImageDataset {
        let d = directory
        let set: ImageDataset
        switch kind {
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
                    try a.finish()
                    if c.augmentation.cropPadding < 0 {
                        throw a.error("random_crop_padding", "must be >= 0, got \(c.augmentation.cropPadding)")
                    }
                } else if let text = try m.string("augmentation") {
                    guard text == "none" else {
                        throw m.error("augmentation", "expected 'none' or a mapping with random_crop_padding and horizontal_flip, found '\(text)'")
                    }
                    c.augmentation = .none
                }
            }, write: { c in
                c.augmentation.isNone ? "none"
                    : "\n    random_crop_padding: \(c.augmentation.cropPadding)\n    horizontal_flip: \(c.augmentation.horizontalFlip)"
            }),
            .value("train_limit", \.trainLimit, check: { $0 >= 0 ? nil : "must be >= 0 (0 means all), got \($0)" }),
            .value("test_limit", \.testLimit, check: { $0 >= 0 ? nil : "must be >= 0 (0 means all), got \($0)" }),
        ]
    }

    public func check(_ m: ConfigMapping) throws {
        for (key, list) in [("mean", mean), ("std", std)] where list.count != kind.channels {
            throw m.error(key, "\(kind.rawValue) has \(kind.channels) channel(s), found \(list.count) value(s)")
        }
    }
}

extension DataConfig.Kind {
    public var channels: Int { self == .cifar10 ? 3 : 1 }
    public var imageSize: Int { self == .cifar10 ? 32 : 28 }
    public var classes: Int { 10 }

    public var defaultDirectory: String {
        switch self {
        case .fashionMNIST: return "/usr/share/datasets/fashion-mnist"
        case .mnist: return "data/mnist"
        case .cifar10: return "data/cifar-10-batches-bin"
        }
    }

    public var defaultMean: [Double] {
        switch self {
        case .fashionMNIST: return [0.2860]
        case .mnist: return [0.1307]
        case .cifar10: return [0.4914, 0.4822, 0.4465]
        }
    }

    public var defaultStd: [Double] {
        switch self {
        case .fashionMNIST: return [0.3530]
        case .mnist: return [0.3081]
        case .cifar10: return [0.2470, 0.2435, 0.2616]
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
        }
    }
}
