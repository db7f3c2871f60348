x: mov eax, x

end equ end+1
mov eax, end
