"""Loss landscapes: synthetic problems, task families, and real-data tasks. See :mod:`tasks.base`."""

from tasks.base import SPLITS, SingleTaskFamily, Task, TaskFamily
# Synthetic problems, wrappers, TaskSet-style families, the Wichrowska 2017 problem set and every named problem.
from tasks import families, problem_sets, sampling, wrappers
from tasks.families import NoisyBowlFamily, NoisyQuadraticFamily, RescaledFamily, SparseFamily, TestFunctionsFamily
from tasks.generated_classification import MLPClassifierFamily, NoisyClustersMLPFamily, SoftmaxRegressionFamily
from tasks.matmul_algorithm import MatMulAlgorithm, MatMulAlgorithmFamily
from tasks.norm import Norm, NormFamily
from tasks.problem_sets import PROBLEMS, ProblemSet, problem, problem_set, wichrowska2017
from tasks.quadratic import Bowl, BowlFamily, Quadratic, QuadraticFamily
from tasks.test_functions import RosenbrockND, TestFunction, TestFunctionFamily
# Real data: IDX files, Fashion-MNIST / MNIST / digits, Flax classifiers and their families.
from tasks import datasets, idx, image_classification, image_families, image_patches
from tasks import synthetic_images
from tasks.datasets import (DatasetNotFoundError, load_dataset, load_digits, load_fashion_mnist, load_mnist,
                            load_image_patches, load_photograph_patches, load_synthetic_images)
from tasks.idx import IdxFormatError, read_idx, write_idx
from tasks.image_classification import ImageClassificationTask, conv_task, mlp_task
from tasks.image_families import ConvNetFamily, FixedImageClassifierFamily, ImageTaskConfig, MLPFamily
from tasks.wrappers import (GradientNoise, GradientNoiseFamily, LogObjective, LogObjectiveFamily, Rescale,
                            RescaleFamily, SparseGradients, SparseGradientsFamily, Sum, SumFamily)

__all__ = ['SPLITS', 'SingleTaskFamily', 'Task', 'TaskFamily']
__all__ += ['Bowl', 'BowlFamily', 'GradientNoise', 'GradientNoiseFamily', 'LogObjective', 'LogObjectiveFamily',
            'MLPClassifierFamily', 'MatMulAlgorithm', 'MatMulAlgorithmFamily', 'NoisyBowlFamily',
            'NoisyClustersMLPFamily',
            'NoisyQuadraticFamily', 'Norm', 'NormFamily', 'ProblemSet', 'Quadratic', 'QuadraticFamily', 'Rescale',
            'RescaleFamily', 'RescaledFamily', 'RosenbrockND', 'SoftmaxRegressionFamily', 'SparseFamily',
            'SparseGradients', 'SparseGradientsFamily', 'Sum', 'SumFamily', 'TestFunction', 'TestFunctionFamily',
            'TestFunctionsFamily', 'PROBLEMS', 'families', 'problem', 'problem_set', 'problem_sets', 'sampling',
            'wichrowska2017', 'wrappers']
__all__ += ['ConvNetFamily', 'DatasetNotFoundError', 'FixedImageClassifierFamily', 'IdxFormatError',
            'ImageClassificationTask', 'ImageTaskConfig', 'MLPFamily', 'conv_task', 'datasets', 'idx',
            'image_classification', 'image_families', 'load_dataset', 'load_digits', 'load_fashion_mnist',
            'load_image_patches', 'load_mnist', 'load_photograph_patches', 'load_synthetic_images', 'mlp_task', 'read_idx', 'synthetic_images', 'write_idx']
