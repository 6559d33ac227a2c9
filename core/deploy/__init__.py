"""Using a trained model: prediction on photos and folders, the export (ONNX / TorchScript with its
model card and standalone loader)."""
