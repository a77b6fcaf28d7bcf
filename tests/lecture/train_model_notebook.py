"""The lecture's notebook (train_model.ipynb of the custom-dataloader lecture), cell by cell, with
only its helper imports pointed at our files. Run in a folder where `python make_subset.py` has run."""

import matplotlib

matplotlib.use("module://inline_backend")  # a notebook's backend, set before our files are imported

import inline_backend  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from loaders import get_dataloaders  # noqa: E402   (was: from helper_dataset import get_dataloaders)
from plot import plot_accuracy, plot_training_loss, show_examples  # noqa: E402   (helper_plotting)
from evaluate import compute_accuracy, set_all_seeds, set_deterministic  # noqa: E402   (helper_evaluation)
from train import train_model  # noqa: E402   (helper_train)

assert matplotlib.get_backend() == "module://inline_backend", matplotlib.get_backend()

RANDOM_SEED = 123
BATCH_SIZE = 64
NUM_EPOCHS = 3
DEVICE = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")

set_all_seeds(RANDOM_SEED)
set_deterministic()

train_loader, valid_loader, test_loader = get_dataloaders(batch_size=BATCH_SIZE)

for images, labels in train_loader:
    print("Image batch dimensions:", images.shape)
    print("Image label dimensions:", labels.shape)
    print("Class labels of 10 examples:", labels[:10])
    break


class MLP(torch.nn.Module):
    def __init__(self, num_features, num_hidden, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.model = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(num_features, num_hidden),
            torch.nn.Sigmoid(),
            torch.nn.Linear(num_hidden, num_classes))

    def forward(self, x):
        return self.model(x)


model = MLP(num_features=28 * 28, num_hidden=100, num_classes=10)
model = model.to(DEVICE)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

minibatch_loss_list, train_acc_list, valid_acc_list = train_model(
    model=model,
    num_epochs=NUM_EPOCHS,
    train_loader=train_loader,
    valid_loader=valid_loader,
    test_loader=test_loader,
    optimizer=optimizer,
    device=DEVICE)

plot_training_loss(minibatch_loss_list=minibatch_loss_list,
                   num_epochs=NUM_EPOCHS,
                   iter_per_epoch=len(train_loader),
                   results_dir=None,
                   averaging_iterations=20)
print("open figures before show:", len(plt.get_fignums()))
plt.show()

plot_accuracy(train_acc_list=train_acc_list,
              valid_acc_list=valid_acc_list,
              results_dir=None)
plt.ylim([0, 100])
print("open figures before show:", len(plt.get_fignums()))
plt.show()

model.cpu()
show_examples(model=model, data_loader=test_loader)
print("open figures before show:", len(plt.get_fignums()))
plt.show()

print("test accuracy again:", f"{compute_accuracy(model, test_loader, 'cpu'):.2f}%")
print("lists:", len(minibatch_loss_list), len(train_acc_list), len(valid_acc_list))
print("shown:", inline_backend.shown)
