module github.com/ctfhost/access

go 1.19
