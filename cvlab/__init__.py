"""cvlab: the package under the course notebooks.

One module per job, named after the lesson topic it serves; imports point down only:

    images          reading files, sample photos, format conversions   (the ground floor, with utils)
    utils           seeding, device choice, CPU features, progress bars, hashes, the lesson result line
    exercises       the feedback of the lessons' checked exercises (nbgrader check cells)
    datasets        Fashion-MNIST (checked by sha256), image folders, class statistics
    video           video with OpenCV: frames as tensors, writing, cameras, stage timing; BGR <-> tensor
    scenes          detection/segmentation scenes with exact labels from Fashion-MNIST items, COCO files
    loaders         InMemoryLoader, make_loader (the one DataLoader recipe), balanced_sampler
    transforms      transforms.v2 presets, normalisation, pretrained preprocessing
    checkpoints     atomic save / safe load of models and training states
    distributed     several processes (torchrun): process group, DDP wrapping, data shares, metrics reduced over ranks
    models          the course's architectures, build / load by name, find_layer
    pretrained      torchvision's pretrained classifiers, offline where cached; the model zoo
    transfer        new heads, freezing, parameter groups, feature caching
    backbones       pretrained backbones for cvlab train: ImageNet weights, new head, freezing, staged unfreezing
    losses          FocalLoss
    history         History (per-epoch records), EarlyStopping, the divergence rule, TrainingDiverged/Interrupted
    schedules       learning-rate schedulers or factories (optimizer, total_steps), rebuilt for longer runs
    resume          best.pt / last.pt after each epoch, resuming with the saved optimizer and scheduler
    training        train_one_epoch, evaluate, fit
    metrics         predict, accuracy, scikit-learn's confusion matrix and per-class report
    detection       target and image checks, train_one_epoch / evaluate (COCO mAP), filtering and
                    matching detections (TP / FP / miss), confused classes
    detectors       detector models: torchvision's COCO zoo, SSD-MobileNetV2-COCO in OpenCV, fcos_mobilenet_v2
    segmentation    masks as data, Dice loss, training, mIoU with torchmetrics, overlays (lesson 07)
    segmenters      U-Net, torchvision's LRASPP on MobileNetV2, full-resolution refinement (lesson 07)
    experiments     train_and_evaluate, results_table: fair model comparisons
    visualization   plots that return their Figure
    interpretation  GradCAM, saliency, occlusion, randomize_layers
    latency         batch-1 latency on this CPU, GFLOPS, the latency-vs-accuracy table of architectures (lesson 09)
    deployment      TorchScript, torch.export and ONNX export, ONNX Runtime serving, parity vs eager (lesson 09)
    quantization    int8 post-training quantization, dynamic and static, with torch.ao and ONNX Runtime (lesson 09)
    widgets         ipywidgets explorers whose logic is testable without a browser
    provisioning    puts data and weights in place (python course.py setup); never imported by the above
    runs            run folders of the command line: fresh, never over another run
    inference       batch prediction on image files with a training checkpoint (python -m cvlab predict)
    cli             the command line's options and their checks (python -m cvlab runs it)
    train_command   python -m cvlab train: data, model, optimizer, fit and report, on one process or several

The contract every public function follows:

* ``device=None`` where a model runs means "pick the best device": CUDA, then Apple MPS, then
  CPU (``cvlab.utils.get_device``; the environment variable ``CVLAB_DEVICE`` overrides it).
  (``InMemoryLoader(device=None)`` moves no batch: the loop that runs the model moves them.)
* ``progress`` is a bool: True shows a tqdm bar.
* ``seed`` defaults to ``cvlab.utils.DEFAULT_SEED`` (0) wherever a function takes one; only
  ``set_seed`` changes the global random state (loaders and widgets use their own generators).
* Outputs come before labels: ``predict -> Predictions(probs, labels)``,
  ``extract_features -> (features, labels)``.
* A function that puts a model in eval (or train) mode puts it back in the mode it found it in.
* Images: tensors (C, H, W) or (N, C, H, W); uint8 in [0, 255] or float32 in [0, 1]; accuracies
  in %, times in seconds, sizes in pixels.
* Bad input raises an error whose message says what was wrong and what to do.

The names the lessons use most are importable from the top level: ``cvlab.fit``,
``cvlab.train_one_epoch``, ``cvlab.evaluate``, ``cvlab.set_seed``, ``cvlab.get_device``.
"""
from .training import evaluate, fit, train_one_epoch
from .utils import get_device, set_seed

__version__ = "0.1.0"
__all__ = ["evaluate", "fit", "get_device", "set_seed", "train_one_epoch"]
