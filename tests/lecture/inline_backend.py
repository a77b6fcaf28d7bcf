"""A stand-in for Jupyter's inline backend: plt.show() "displays" every open figure (records its
titles, axis labels and size) and closes it, as the notebook does at the end of a cell."""

import matplotlib.pyplot as plt
from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase
shown = []


def show(*args, **kwargs):
    for number in plt.get_fignums():
        fig = plt.figure(number)
        fig.canvas.draw()  # rendering must work, as it does for a notebook's PNG
        shown.append([ax.get_title() or ax.get_xlabel() for ax in fig.axes])
    plt.close("all")
