# providers.gp: client CPU per call, provider by provider (bench/providers.sh).
# gnuplot -c bench/plots/providers.gp DATA OUT NOTE
# DATA: a header row ("docs" and the providers' names, quoted), then docs us us us.
load 'bench/plots/common.gp'
set output ARG2
set title "CPU per call by provider: NIM's C rules against descriptor providers, top_n = 5\n" . \
    ARG3
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set yrange [0:*]
set xlabel 'documents per call (200 bytes each)'
set ylabel 'client CPU per call (µs)'
set key top left
plot ARG1 using 2:xtic(1) title columnheader(2) lc rgb NIM, \
     '' using 3 title columnheader(3) lc rgb BASE, \
     '' using 4 title columnheader(4) lc rgb ALT
