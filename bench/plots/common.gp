# common.gp: what every plot of bench/plots.sh shares (loaded by each script).
# A small PNG that stays readable on GitHub's page width; no enhanced text, so names with _
# stay as written.
set encoding utf8
set terminal pngcairo size 800,450 font 'sans,10' noenhanced
set grid lc rgb '#dddddd'
set border lc rgb '#555555'
set key noopaque box lc rgb '#cccccc'
NIM = '#76b900'   # nimrank
BASE = '#4d4d4d'  # the baseline it is measured against
ALT = '#1f77b4'   # a third series
